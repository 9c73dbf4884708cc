"""The exercises package as a whole: its public names, where checkers take their references
from, stubs passing through, and the multiple-choice questions."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from atcourse import exercises as ex

#: The public names before the package was split by lesson; notebooks and tests use them.
NAMES_BEFORE_THE_SPLIT = [
    "ExerciseError", "check_kd_loss", "check_softmax_T", "check_attention_map",
    "check_at_loss", "check_reduction_bug", "check_input_gradient", "check_flip_penalty",
    "check_seed_summary", "check_gap_closed", "check_choice", "question", "QUESTIONS",
    "check_attention_distillation_loss", "check_attention_rollout",
    "check_class_activation_maps", "check_cat_loss", "check_decay_weights",
    "check_attentional_feature_block",
]  # fmt: skip

PACKAGE = Path(ex.__file__).parent

CHECKERS = [getattr(ex, name) for name in ex.__all__ if name.startswith("check_")]


def test_public_names_survive_the_split():
    assert set(NAMES_BEFORE_THE_SPLIT) <= set(ex.__all__)
    for name in ex.__all__:
        assert getattr(ex, name) is not None, name
    assert issubclass(ex.ExerciseError, AssertionError)  # a wrong answer fails like an assert


def test_checkers_use_only_public_reference_implementations():
    """Checkers import distill's public names, so reorganising its modules cannot break them."""
    import atcourse.distill as distill

    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = "." * node.level + (node.module or "")
            assert "distill." not in module, f"{path.name} imports from {module}"
            if module.endswith("distill"):
                for alias in node.names:
                    assert alias.name in distill.__dict__ and not alias.name.startswith("_"), (
                        f"{path.name} imports {alias.name}, not a public name of atcourse.distill"
                    )


def test_not_implemented_passes_through():
    def stub(*args):
        raise NotImplementedError("Exercise: write your solution here")

    for checker in (ex.check_kd_loss, ex.check_softmax_T, ex.check_attention_map, ex.check_at_loss):
        with pytest.raises(NotImplementedError):
            checker(stub)
    # the student edition's stub is "not done yet", never a wrong answer, for every checker
    for checker in CHECKERS:
        if checker in (ex.check_choice, ex.check_reduction_bug, ex.check_prediction):
            continue  # they take answers, not functions
        with pytest.raises(NotImplementedError):
            checker(stub)


def _letter(question_id: str, words: str) -> str:
    """The letter of the choice whose text contains ``words``."""
    (letter,) = [k for k, v in ex.QUESTIONS[question_id]["choices"].items() if words in v]
    return letter


def test_check_choice(capsys):
    for qid, q in ex.QUESTIONS.items():
        assert q["correct"] in q["choices"]
        assert set(q["feedback"]) == set(q["choices"]) - {q["correct"]}
        ex.check_choice(qid, q["correct"].upper() + ")")
        assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(ex.ExerciseError, match="teacher's entropy"):
        ex.check_choice("kd_ce_vs_kl", _letter("kd_ce_vs_kl", "Nothing at all"))
    with pytest.raises(ex.ExerciseError, match="channel reduction"):
        ex.check_choice("at_normalize", _letter("at_normalize", "different channel counts"))
    with pytest.raises(ex.ExerciseError, match="one of the letters"):
        ex.check_choice("at_p", "z")
    with pytest.raises(ValueError, match="valid ids"):
        ex.check_choice("no_such_question", "a")
    assert "a)" in ex.question("at_p")


def test_answer_letters_are_balanced():
    """No letter holds more than 40% of the answers: guessing one letter must not pay."""
    counts = Counter(q["correct"] for q in ex.QUESTIONS.values())
    assert sum(counts.values()) == len(ex.QUESTIONS)
    for letter, count in counts.items():
        assert count <= 0.4 * len(ex.QUESTIONS), (
            f"{letter!r} answers {count} of {len(ex.QUESTIONS)}"
        )
    assert len(counts) == 4, counts  # every letter is right somewhere
