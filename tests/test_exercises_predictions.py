"""Predict, then run: recording a prediction, checking it against a run's measurement, and
the place of each notebook's prediction around the experiment that decides it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from atcourse import exercises as ex
from atcourse.exercises import predictions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

#: For every prediction, one measurement per outcome that leads to it.
OUTCOMES = {
    "00-teacher-attention": {
        "chance": {"on_object": 12.0, "chance": 10.0},
        "above": {"on_object": 20.0, "chance": 10.0},
        "far_above": {"on_object": 35.3, "chance": 10.8},
    },
    "01-kd-against-alone": {
        "both": dict(kd_accuracy=78, baseline_accuracy=48, kd_agreement=85, baseline_agreement=50),
        "agreement": dict(
            kd_accuracy=47, baseline_accuracy=48, kd_agreement=60, baseline_agreement=50
        ),
        "accuracy": dict(
            kd_accuracy=50, baseline_accuracy=48, kd_agreement=49, baseline_agreement=50
        ),
        "neither": dict(
            kd_accuracy=40, baseline_accuracy=48, kd_agreement=45, baseline_agreement=50
        ),
    },  # fmt: skip
    "02-where-students-look": {
        "baseline": {"baseline": 36, "at": 35, "kd": 34, "at+kd": 33},
        "at": {"baseline": 30, "at": 36, "kd": 34, "at+kd": 35},
        "kd": {"baseline": 30, "at": 35, "kd": 36, "at+kd": 34},
        "at+kd": {"baseline": 30, "at": 35, "kd": 34, "at+kd": 36},
    },
    "03-gradient-distance": {
        "gradient_at": {"baseline": 0.8, "gradient_at": 0.5, "at": 0.6},
        "at": {"baseline": 0.8, "gradient_at": 0.6, "at": 0.5},
        "baseline": {"baseline": 0.4, "gradient_at": 0.6, "at": 0.5},
    },
    "04-cat-kd-rank": {
        "kd": {"kd": 90, "at": 85, "cat_kd": 86},
        "at": {"kd": 78.25, "at": 93.15, "cat_kd": 86.0},
        "cat_kd": {"kd": 80, "at": 85, "cat_kd": 86},
    },
    "05-adaptive-weights": {
        "ce": {"alpha": 1.05, "beta": 0.95},
        "afd": {"alpha": 0.9, "beta": 1.1},
        "neither": {"alpha": 1.0, "beta": 1.0},
    },
    "06-copy-share": {
        "most": {"scratch": 30, "fine-tune": 70, "attn_copy": 60},
        "some": {"scratch": 30, "fine-tune": 70, "attn_copy": 40},
        "none": {"scratch": 30, "fine-tune": 70, "attn_copy": 30},
    },
    "07-kd-against-noise": {
        "beats": dict(kd_gain=30.0, kd_se=2.0, n_paired=3),
        "noise": dict(kd_gain=2.0, kd_se=1.5, n_paired=3),
        "worse": dict(kd_gain=-10.0, kd_se=1.0, n_paired=3),
        "cannot_tell": dict(kd_gain=29.8, kd_se=0.0, n_paired=1),
    },  # fmt: skip
}


@pytest.fixture(autouse=True)
def no_recorded_predictions(monkeypatch):
    """Each test starts with no prediction recorded, as a fresh notebook kernel does."""
    monkeypatch.setattr(predictions, "_recorded", {})


def test_every_prediction_reaches_each_of_its_outcomes(capsys):
    assert set(OUTCOMES) == set(ex.PREDICTIONS)
    for pid, p in ex.PREDICTIONS.items():
        assert set(OUTCOMES[pid]) == set(p.choices) == set(p.why)
        for outcome, observed in OUTCOMES[pid].items():
            assert set(observed) == set(p.observed), pid
            ex.predict(pid, outcome)
            ex.check_prediction(pid, observed=observed)
            out = capsys.readouterr().out
            assert f"✓ your prediction held in this run: {outcome!r}" in out, (pid, out)
            assert p.why[outcome] in out


def test_a_right_prediction(capsys):
    pid = "02-where-students-look"
    assert "'at+kd': the AT+KD student" in ex.prediction(pid)
    ex.predict(pid, " AT ")  # as typed: case and spaces do not matter
    assert "prediction recorded for '02-where-students-look': 'at'" in capsys.readouterr().out
    observed = {"baseline": 31.2, "at": torch.tensor(35.9), "kd": 34.0, "at+kd": 35.0}
    ex.check_prediction(pid, observed=observed)  # 0-d tensors are read as numbers
    out = capsys.readouterr().out
    assert out.startswith("✓ your prediction held in this run: 'at' (the AT student).")
    assert "alone 31.2%, AT 35.9%, KD 34.0%, AT+KD 35.0%" in out  # what was measured
    assert "pulls the student's normalized maps towards the teacher's" in out  # and why


def test_a_wrong_prediction_is_explained_not_raised(capsys):
    pid = "05-adaptive-weights"
    ex.predict(pid, "afd")
    capsys.readouterr()
    ex.check_prediction(pid, observed={"alpha": 1.0, "beta": 1.0})  # one epoch: no rate yet
    out = capsys.readouterr().out
    assert out.startswith("✗ your prediction did not hold in this run: you predicted 'afd'")
    assert "the run gave 'neither' (neither: both weights stay at 1)" in out
    assert "alpha 1.000, beta 1.000" in out and "first two epochs run at" in out


def test_a_later_prediction_replaces_the_first(capsys):
    pid = "04-cat-kd-rank"
    ex.predict(pid, "cat_kd")
    ex.predict(pid, "at")
    ex.check_prediction(pid, observed=OUTCOMES[pid]["at"])
    assert "✓ your prediction held in this run: 'at'" in capsys.readouterr().out


def test_a_prediction_never_made():
    pid = "01-kd-against-alone"
    with pytest.raises(ex.ExerciseError) as info:
        ex.check_prediction(pid, observed=OUTCOMES[pid]["both"])
    message = str(info.value)
    assert "no prediction recorded for '01-kd-against-alone'" in message
    assert "exercises.predict('01-kd-against-alone'" in message and "'neither'" in message


def test_an_unknown_id():
    for call in (
        lambda: ex.prediction("02-at-vs-kd"),
        lambda: ex.predict("02-at-vs-kd", "at"),
        lambda: ex.check_prediction("02-at-vs-kd", observed={}),
    ):
        with pytest.raises(ValueError, match="unknown prediction '02-at-vs-kd'; valid ids: 00-"):
            call()


def test_a_choice_that_is_not_one():
    with pytest.raises(ex.ExerciseError, match="'b' is not a choice of '03-gradient-distance'"):
        ex.predict("03-gradient-distance", "b")
    with pytest.raises(ex.ExerciseError, match="no prediction given .*'gradient_at'"):
        ex.predict("03-gradient-distance", None)


def test_measurements_that_cannot_decide():
    pid = "06-copy-share"
    ex.predict(pid, "most")
    with pytest.raises(ValueError, match="missing attn_copy"):
        ex.check_prediction(pid, observed={"scratch": 30, "fine-tune": 70})
    with pytest.raises(ValueError, match="not expected copy"):
        ex.check_prediction(pid, observed={**OUTCOMES[pid]["most"], "copy": 1})
    with pytest.raises(ValueError, match="must be a number"):
        ex.check_prediction(pid, observed={**OUTCOMES[pid]["most"], "scratch": "30%"})
    with pytest.raises(ValueError, match="not produce a finite measurement"):
        ex.check_prediction(pid, observed={**OUTCOMES[pid]["most"], "attn_copy": math.nan})
    with pytest.raises(ValueError, match="must be a mapping"):
        ex.check_prediction(pid, observed=[30, 70, 60])
    ex.predict("00-teacher-attention", "above")
    with pytest.raises(ValueError, match="'chance' must be positive"):
        ex.check_prediction("00-teacher-attention", observed={"on_object": 30, "chance": 0})


def test_a_prediction_explains_every_outcome():
    with pytest.raises(ValueError, match="explains every outcome"):
        ex.Prediction(
            prompt="?", choices={"a": "A", "b": "B"}, observed=("x",),
            decide=lambda v: "a", measured=lambda v: "", why={"a": "because"},
        )  # fmt: skip


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) if c["cell_type"] == "code" else "" for c in cells]


#: Calls that train or load a trained network: what a prediction must come before.
EXPERIMENTS = ("atcourse.fit(", "zoo.teacher(", "experiments.train_entry(")


@pytest.mark.parametrize("number", [f"{n:02d}" for n in range(8)])
def test_each_notebook_predicts_before_its_experiment(number):
    (path,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    cells = _code_cells(path)
    ids = [pid for pid in ex.PREDICTIONS if pid.startswith(number + "-")]
    assert ids, f"notebook {number} has no predict-then-run question"
    for pid in ids:
        (asked,) = [i for i, s in enumerate(cells) if f'exercises.predict("{pid}"' in s]
        checks = re.compile(r'check_prediction\(\s*"' + re.escape(pid) + '"')
        (checked,) = [i for i, s in enumerate(cells) if checks.search(s)]
        assert asked < checked
        assert any(call in s for s in cells[asked + 1 : checked] for call in EXPERIMENTS)
        # the student edition asks the learner for the prediction; the output is the run's
        assert "# BEGIN SOLUTION" in cells[asked]
        assert "NBVAL_CHECK_OUTPUT" not in cells[asked] + cells[checked]
