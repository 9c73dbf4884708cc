"""Every notebook's parameters cell is read in full by papermill (``--help-notebook``, ``-p``)."""

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HELP_LINE = re.compile(r"^  (?P<name>\w+): .*\(default (?P<default>.*)\)$")


def assigned(path: Path) -> dict[str, str]:
    """name -> source text of its value, for each assignment in the parameters cell."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters'"
    source = "".join(cells[0]["source"])
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{path.name}: not literals only"
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            values[target.id] = ast.get_source_segment(source, node.value)
    return values


def test_all_notebooks_are_checked():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(8)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_help_notebook_lists_every_parameter_with_its_default(path, caplog):
    from click.testing import CliRunner
    from papermill.cli import papermill

    result = CliRunner().invoke(papermill, ["--help-notebook", str(path)])
    assert result.exit_code == 0, result.output
    listed = {m["name"]: m["default"] for m in map(HELP_LINE.match, result.output.splitlines())
              if m}  # fmt: skip
    assert listed == assigned(path)
    # papermill skips a line it cannot read (two '=' on it) with only a log warning
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_checked_cell_with_a_stored_output_has_an_execution_count(path):
    # nbval refuses a cell whose reference output has no execution count ("Unrun reference
    # cell has outputs"): a notebook edited by hand fails its smoke check only in CI.
    nb = json.loads(path.read_text(encoding="utf-8"))
    unrun = [c.get("id", i) for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and c.get("outputs") and c.get("execution_count") is None
             and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]  # fmt: skip
    assert not unrun, (
        f"{path.name}: cells {unrun} keep outputs but no execution count; run them again "
        f"(or give them a count) so nbval compares them"
    )
