"""Student editions: solution blocks replaced by stubs, outputs and run traces cleared."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from atcourse.student import (
    BEGIN,
    STUB,
    SolutionMarkerError,
    make_student_edition,
    run_cli,
    stub_solutions,
    write_student_editions,
)

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


@pytest.mark.slow  # starts a kernel
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


def test_course_notebooks_have_student_editions(tmp_path):
    """Every notebook of the course has exercises, and its edition gives none of them away."""
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        source = nbformat.read(path, as_version=4)
        blocks = sum(c.source.count(BEGIN) for c in source.cells if c.cell_type == "code")
        assert make_student_edition(path, tmp_path / path.name) == blocks > 0, path.name
        edition = nbformat.read(tmp_path / path.name, as_version=4)
        assert not any("SOLUTION" in c.source for c in edition.cells if c.cell_type == "code")
