"""Exercise checkers (accept the reference, diagnose typical mistakes) and student editions."""

from __future__ import annotations

import warnings

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcourse import exercises as ex
from atcourse.distill import at_loss, attention_map, kd_loss
from atcourse.student import (
    STUB,
    SolutionMarkerError,
    make_student_edition,
    run_cli,
    stub_solutions,
    write_student_editions,
)


def _rejects(checker, answer, *words):
    with pytest.raises(ex.ExerciseError) as info:
        checker(answer)
    message = str(info.value)
    for word in words:
        assert word in message, message
    return message


def _accepts(checker, answer, capsys):
    checker(answer)
    assert capsys.readouterr().out.startswith("✓")


# --------------------------------------------------------------------------- KD


def test_check_kd_loss(capsys):
    _accepts(ex.check_kd_loss, kd_loss, capsys)

    def no_t2(s, t, T):
        return F.kl_div(
            F.log_softmax(s / T, 1), F.softmax(t.detach() / T, 1), reduction="batchmean"
        )

    def mean_reduction(s, t, T):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nn.KLDivLoss()(F.log_softmax(s / T, 1), F.softmax(t.detach() / T, 1)) * T**2

    def soft_ce(s, t, T):
        return -(F.softmax(t.detach() / T, 1) * F.log_softmax(s / T, 1)).sum(1).mean() * T**2

    def not_detached(s, t, T):
        return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T**2

    def per_sample(s, t, T):
        p_t = F.softmax(t / T, 1)
        return (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1) * T**2

    _rejects(ex.check_kd_loss, no_t2, "T^2 too small", "T**2")
    _rejects(ex.check_kd_loss, mean_reduction, "averaged over classes", "batchmean")
    _rejects(ex.check_kd_loss, soft_ce, "cross-entropy with soft targets", "entropy")
    _rejects(ex.check_kd_loss, not_detached, "detach")
    _rejects(ex.check_kd_loss, per_sample, "average over the batch")


def test_check_softmax_t(capsys):
    _accepts(ex.check_softmax_T, lambda z, T: torch.softmax(z / T, dim=1), capsys)
    _rejects(ex.check_softmax_T, lambda z, T: torch.softmax(z, dim=1), "ignored T")
    _rejects(ex.check_softmax_T, lambda z, T: torch.softmax(z / T, dim=0), "wrong dimension")

    def naive(z, T):
        e = torch.exp(z / T)
        return e / e.sum(1, keepdim=True)

    _rejects(ex.check_softmax_T, naive, "overflow", "max")


def test_check_reduction_bug(capsys):
    ex.check_reduction_bug("batchmean", 10)
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(ex.ExerciseError, match="buggy default"):
        ex.check_reduction_bug("mean", 10)
    with pytest.raises(ex.ExerciseError, match="grow with the batch size"):
        ex.check_reduction_bug("sum", 10)
    with pytest.raises(ex.ExerciseError, match="number of classes"):
        ex.check_reduction_bug("batchmean", 128)
    with pytest.raises(ex.ExerciseError, match="accepts reduction"):
        ex.check_reduction_bug("avg", 10)


# --------------------------------------------------------------------------- attention


def test_check_attention_map(capsys):
    _accepts(ex.check_attention_map, lambda x, p: attention_map(x, p), capsys)
    _rejects(
        ex.check_attention_map, lambda x, p: x.abs().pow(p).mean(1), "not normalized per sample"
    )
    _rejects(
        ex.check_attention_map,
        lambda x, p: F.normalize(x.abs().pow(p).mean(2).flatten(1), dim=1).view(2, 3, 5),
        "wrong output shape",
        "[B,H,W]",
        "wrong dimension",
    )
    _rejects(
        ex.check_attention_map,
        lambda x, p: F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1),
        "wrong output shape",
        "flattened",
    )

    def signed_power(x, p):
        m = x.pow(p).mean(1)
        return F.normalize(m.flatten(1), dim=1).view_as(m)

    _rejects(ex.check_attention_map, signed_power, "absolute value")


def test_check_at_loss(capsys):
    _accepts(ex.check_at_loss, lambda s, t: at_loss(s, t), capsys)

    def unnormalized(s, t):
        return (s.pow(2).mean(1) - t.detach().pow(2).mean(1)).pow(2).mean()

    def paper_form(s, t):
        return at_loss(s, t, mode="paper")

    def summed(s, t):
        return at_loss(s, t) * s.shape[-1] * s.shape[-2]

    def not_detached(s, t):
        a = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
        b = F.normalize(t.pow(2).mean(1).flatten(1), dim=1)
        return (a - b).pow(2).mean()

    def raw_features(s, t):
        return (s - t.detach()).pow(2).mean()

    _rejects(ex.check_at_loss, unnormalized, "normalize each map")
    _rejects(ex.check_at_loss, paper_form, "Eq. 2", "squared")
    _rejects(ex.check_at_loss, summed, "summed over positions")
    _rejects(ex.check_at_loss, not_detached, "detach")
    _rejects(ex.check_at_loss, raw_features, "channels")


# --------------------------------------------------------------------------- gradient AT


def _grad(model, images, labels, reduction="sum", sign=1.0):
    x = images.detach().requires_grad_(True)
    loss = sign * F.cross_entropy(model(x), labels, reduction=reduction)
    return torch.autograd.grad(loss, x)[0]


def test_check_input_gradient(capsys):
    from atcourse.distill import input_gradient

    _accepts(ex.check_input_gradient, input_gradient, capsys)
    _rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y, "mean"), "too small", "sum")
    _rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y, sign=-1.0), "sign")
    _rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y)[:, 0], "shape")

    def in_place(model, images, labels):  # differentiates the caller's tensor itself
        if not images.requires_grad:
            images = images.detach().requires_grad_(True)
        F.cross_entropy(model(images), labels, reduction="sum").backward()
        return images.grad

    _rejects(ex.check_input_gradient, in_place, ".grad")


def test_check_flip_penalty(capsys):
    from atcourse.distill import flip_invariance_loss, input_gradient

    _accepts(ex.check_flip_penalty, lambda m, x, y: flip_invariance_loss(m, x, y, False), capsys)

    def penalty(flip_back=True, dims=(-1,), reduce="mean"):
        def fn(model, images, labels):
            J = input_gradient(model, images, labels)
            J_m = input_gradient(model, torch.flip(images, dims=dims), labels)
            diff = J - (torch.flip(J_m, dims=dims) if flip_back else J_m)
            norms = diff.flatten(1).norm(dim=1)
            return norms.mean() if reduce == "mean" else norms.sum()

        return fn

    _rejects(ex.check_flip_penalty, penalty(flip_back=False), "flip J(flip(x)) back")
    _rejects(ex.check_flip_penalty, penalty(dims=(-2,)), "left to right")
    _rejects(ex.check_flip_penalty, penalty(reduce="sum"), "average")


def test_not_implemented_passes_through():
    def stub(*args):
        raise NotImplementedError("Exercise: write your solution here")

    for checker in (ex.check_kd_loss, ex.check_softmax_T, ex.check_attention_map, ex.check_at_loss):
        with pytest.raises(NotImplementedError):
            checker(stub)


def test_check_choice(capsys):
    for qid, q in ex.QUESTIONS.items():
        assert q["correct"] in q["choices"]
        assert set(q["feedback"]) == set(q["choices"]) - {q["correct"]}
        ex.check_choice(qid, q["correct"].upper() + ")")
        assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(ex.ExerciseError, match="teacher's entropy"):
        ex.check_choice("kd_ce_vs_kl", "c")
    with pytest.raises(ex.ExerciseError, match="channel reduction"):
        ex.check_choice("at_normalize", "d")
    with pytest.raises(ex.ExerciseError, match="one of the letters"):
        ex.check_choice("at_p", "z")
    with pytest.raises(ValueError, match="valid ids"):
        ex.check_choice("no_such_question", "a")
    assert "a)" in ex.question("at_p")


# --------------------------------------------------------------------------- student editions

SOLUTION_CELL = """\
def my_kd_loss(s, t, T):
    import torch.nn.functional as F
    # BEGIN SOLUTION
    log_p_s = F.log_softmax(s / T, dim=1)
    p_t = F.softmax(t.detach() / T, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * T**2
    # END SOLUTION
"""


def _synthetic_notebook(path):
    v4 = nbformat.v4
    cells = [
        v4.new_code_cell("profile = 'smoke'\nseed = 0", metadata={"tags": ["parameters"]}),
        v4.new_code_cell("profile = 'lab'", metadata={"tags": ["injected-parameters"]}),
        v4.new_code_cell("x = 21 * 2\nprint(x)"),
        v4.new_markdown_cell("## Exercise: the KD loss"),
        v4.new_code_cell(SOLUTION_CELL),
        v4.new_code_cell("from atcourse import exercises\nexercises.check_kd_loss(my_kd_loss)"),
        v4.new_code_cell("print('after the exercise')"),
    ]
    cells[2].outputs = [v4.new_output("stream", name="stdout", text="42\n")]
    cells[2].execution_count = 2
    cells[2].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    cells[5].outputs = [v4.new_output("stream", name="stdout", text="✓ kd_loss: correct\n")]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def test_stub_solutions_keeps_indentation_and_rejects_unmatched_markers():
    source, n = stub_solutions(SOLUTION_CELL)
    assert n == 1
    assert f"    {STUB}" in source.splitlines()
    assert "kl_div" not in source and "SOLUTION" not in source
    two = (
        "# BEGIN SOLUTION\na = 1\n# END SOLUTION\nb = 2\n  # BEGIN SOLUTION\n  c\n  # END SOLUTION"
    )
    source, n = stub_solutions(two)
    assert n == 2 and source.splitlines() == [STUB, "b = 2", f"  {STUB}"]
    with pytest.raises(SolutionMarkerError, match="without"):
        stub_solutions("# BEGIN SOLUTION\nx = 1", where="nb.ipynb cell 3")
    with pytest.raises(SolutionMarkerError, match="without"):
        stub_solutions("x = 1\n# END SOLUTION")


def test_unmatched_marker_names_notebook_and_cell(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("a = 1"),
            nbformat.v4.new_code_cell("# BEGIN SOLUTION\nb = 2"),
        ]
    )
    nbformat.write(nb, src / "03_broken.ipynb")
    with pytest.raises(SolutionMarkerError, match=r"03_broken\.ipynb cell 1"):
        write_student_editions(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
    assert run_cli(str(src), str(tmp_path / "out")) == 1


def test_student_edition(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    _synthetic_notebook(src / "01_kd.ipynb")
    out_dir = tmp_path / "build" / "student"
    assert make_student_edition(src / "01_kd.ipynb", out_dir / "single.ipynb") == 1
    assert run_cli(str(src), str(out_dir)) == 0
    assert "1 exercise stubbed" in capsys.readouterr().out
    edition = nbformat.read(out_dir / "01_kd.ipynb", as_version=4)

    note, *cells = edition.cells
    assert note.cell_type == "markdown" and "Student edition" in note.source
    assert cells[0].metadata["tags"] == ["parameters"]
    assert "injected-parameters" not in str([c.metadata for c in cells])  # run traces gone
    assert "execution" not in cells[1].metadata
    code = [c for c in edition.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert f"    {STUB}" in cells[3].source and "kl_div" not in cells[3].source
    assert cells[3].source.startswith("def my_kd_loss(s, t, T):")

    # Run it: everything before the stub runs; the first check cell raises NotImplementedError.
    from nbclient import NotebookClient

    client = NotebookClient(
        edition,
        timeout=60,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        i
        for i, c in enumerate(edition.cells)
        if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)
    ]
    check_index = 5  # note, parameters, normal, markdown, solution, check, later
    assert errors == [check_index]
    error = next(o for o in edition.cells[check_index].outputs if o.output_type == "error")
    assert error.ename == "NotImplementedError"
    assert "42" in edition.cells[2].outputs[0].text  # the normal cell ran
    assert edition.cells[4].outputs == []  # defining the stubbed function is fine


def test_write_student_editions_needs_notebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        write_student_editions(tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------- leaderboard


def test_check_seed_summary(capsys):
    import statistics

    import numpy as np

    _accepts(ex.check_seed_summary, lambda v: (statistics.fmean(v), statistics.stdev(v)), capsys)
    _rejects(ex.check_seed_summary, lambda v: (np.mean(v), np.std(v)), "n - 1")
    _rejects(ex.check_seed_summary, lambda v: (np.mean(v), np.var(v, ddof=1)), "variance")
    _rejects(ex.check_seed_summary, lambda v: (np.std(v, ddof=1), np.mean(v)), "(mean, std)")
    _rejects(
        ex.check_seed_summary,
        lambda v: (np.mean(v), np.std(v, ddof=1) / len(v) ** 0.5),
        "standard error",
    )
    _rejects(ex.check_seed_summary, lambda v: np.mean(v), "pair")


def test_check_gap_closed(capsys):
    _accepts(ex.check_gap_closed, lambda a, d, t: (d - a) / (t - a), capsys)
    _rejects(ex.check_gap_closed, lambda a, d, t: 100 * (d - a) / (t - a), "percentage")
    _rejects(ex.check_gap_closed, lambda a, d, t: (a - d) / (t - a), "sign")
    _rejects(ex.check_gap_closed, lambda a, d, t: (t - d) / (t - a), "left open")
    _rejects(ex.check_gap_closed, lambda a, d, t: (d - a) / t, "teacher's accuracy")
    _rejects(ex.check_gap_closed, lambda a, d, t: (d - a) / (t - d), "whole gap")
