"""Student editions of the notebooks: solutions replaced by stubs, outputs cleared.

A notebook's exercise is a code cell whose solution lines sit between a line
``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` (at any indentation). The student
edition replaces each such block, markers included, by one line at the marker's
indentation::

    raise NotImplementedError("Exercise: write your solution here")

so the exercise's function still defines, and the check cell after it fails until the
learner writes the solution. Outputs and execution counts are cleared (they would give
the answers away), and so are the traces of a run (papermill's injected-parameters cell,
execution timestamps); other cell metadata and tags stay (the ``parameters`` cell stays
tagged, so papermill still runs the edition). A note at the top says which edition this is.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

__all__ = [
    "BEGIN",
    "END",
    "STUB",
    "SolutionMarkerError",
    "stub_solutions",
    "make_student_edition",
    "write_student_editions",
    "run_cli",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write your solution here")'

_BEGIN_RE = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
_END_RE = re.compile(r"^(\s*)# END SOLUTION\s*$")
# Anything that reads like a marker but is not one exactly ("# begin solution", "#BEGIN
# SOLUTION", "# END SOLUTIONS"): taken as a typo, never as code to publish.
_LOOKALIKE_RE = re.compile(r"^\s*#+\s*(begin|end)[\s_-]*solutions?\b", re.IGNORECASE)

#: Cell and notebook metadata that record a run (timings, papermill status), not content.
_RUN_METADATA = ("execution", "papermill")

_NOTE = (
    "> **Student edition.** The solutions of this notebook's exercises are replaced by "
    '`raise NotImplementedError("Exercise: write your solution here")` and its outputs '
    "are cleared. Write each solution in place of that line, then run the check cell "
    "below it: it prints a line starting with ✓ when the answer is right, and says what "
    "looks wrong otherwise. (Generated from `{source}` by `atcourse student`; edit "
    "that notebook, not this one.)"
)


class SolutionMarkerError(ValueError):
    """A marker without its pair, a nested one, or a line that looks like a marker but is not."""


def stub_solutions(source: str, *, where: str = "cell") -> tuple[str, int]:
    """Replace every marked solution block of a cell's source by the stub.

    Args:
        source: the cell's source text.
        where: how to name the cell in an error (notebook and cell index).

    Returns:
        The new source and the number of blocks replaced.

    Raises:
        SolutionMarkerError: for an unmatched or nested marker, naming ``where`` and the line.
    """
    out: list[str] = []
    count = 0
    open_line: int | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        begin, end = _BEGIN_RE.match(line), _END_RE.match(line)
        if not (begin or end) and _LOOKALIKE_RE.match(line):
            raise SolutionMarkerError(
                f"{where}, line {number}: {line.strip()!r} looks like a solution marker but is "
                f"not one; write exactly {BEGIN!r} or {END!r}, so the solution is not published"
            )
        if begin:
            if open_line is not None:
                raise SolutionMarkerError(
                    f"{where}, line {number}: {BEGIN!r} inside the block opened on line "
                    f"{open_line}; close it with {END!r} first"
                )
            open_line = number
            out.append(f"{begin.group(1)}{STUB}")
            count += 1
        elif end:
            if open_line is None:
                raise SolutionMarkerError(f"{where}, line {number}: {END!r} without {BEGIN!r}")
            open_line = None
        elif open_line is None:
            out.append(line)
    if open_line is not None:
        raise SolutionMarkerError(f"{where}, line {open_line}: {BEGIN!r} without {END!r}")
    return "\n".join(out), count


def _edition(nb_path: Path) -> tuple[nbformat.NotebookNode, int]:
    """The student edition of one notebook, in memory, and its number of exercises."""
    nb = nbformat.read(nb_path, as_version=4)
    # A cell papermill added to a run holds that run's values, not the notebook's.
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    count = 0
    for index, cell in enumerate(nb.cells):
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if BEGIN in cell.source or END in cell.source:
            where = f"{nb_path} cell {index} (id {cell.get('id', '?')})"
            cell.source, n = stub_solutions(cell.source, where=where)
            count += n
    for key in _RUN_METADATA:
        nb.metadata.pop(key, None)
    note = nbformat.v4.new_markdown_cell(_NOTE.format(source=nb_path.name))
    note.metadata["tags"] = ["student-edition"]
    nb.cells.insert(0, note)
    nbformat.validate(nb)
    return nb, count


def _write(nb: nbformat.NotebookNode, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)


def make_student_edition(nb_path: str | Path, out_path: str | Path) -> int:
    """Write the student edition of one notebook.

    Args:
        nb_path: the notebook with solutions.
        out_path: where the edition goes (parent folders are created).

    Returns:
        The number of exercises stubbed (solution blocks replaced).

    Raises:
        SolutionMarkerError: for an unmatched marker, naming the notebook and the cell.
    """
    nb, count = _edition(Path(nb_path))
    _write(nb, Path(out_path))
    return count


def _write_all(src_dir: str | Path, out_dir: str | Path) -> list[tuple[Path, int]]:
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    notebooks = sorted(src_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {src_dir.resolve()}")
    # Build every edition before writing any: a bad marker leaves out_dir as it was.
    editions = [(nb_path, *_edition(nb_path)) for nb_path in notebooks]
    written = []
    for nb_path, nb, count in editions:
        out_path = out_dir / nb_path.name
        _write(nb, out_path)
        written.append((out_path, count))
    return written


def write_student_editions(
    src_dir: str | Path = "notebooks", out_dir: str | Path = "build/student"
) -> list[Path]:
    """Write the student edition of every notebook in ``src_dir`` to ``out_dir``.

    Every edition is built before any is written, so a bad marker leaves ``out_dir`` as
    it was.

    Returns:
        The paths written, in notebook order.

    Raises:
        FileNotFoundError: when ``src_dir`` holds no notebook.
        SolutionMarkerError: for an unmatched marker, naming the notebook and the cell.
    """
    return [path for path, _ in _write_all(src_dir, out_dir)]


def run_cli(src: str = "notebooks", out: str = "build/student") -> int:
    """Command-line entry (``atcourse student``): write every edition, print what was written.

    Returns:
        The exit status: 0 on success, 1 on a bad marker or a missing source folder.
    """
    try:
        written = _write_all(src, out)
    except (FileNotFoundError, SolutionMarkerError) as err:
        print(f"error: {err}")
        return 1
    for path, count in written:
        print(f"wrote {path} ({count} exercise{'' if count == 1 else 's'} stubbed)")
    total = sum(count for _, count in written)
    print(f"{len(written)} student notebook(s), {total} exercise(s) in all, under {out}")
    return 0
