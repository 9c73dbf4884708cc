"""The atcourse command: parameter checks before launching, summaries, exit codes."""

import json

import pytest

from atcourse import cli


def _notebook(path, params_src, body_src):
    nb = {
        "cells": [
            {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]}, "source": params_src,
             "outputs": [], "execution_count": None},
            {"cell_type": "code", "id": "body", "metadata": {}, "source": body_src, "outputs": [],
             "execution_count": None},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def test_notebook_parameters_reads_literals(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\nbeta = 1e3\n', "pass")
    assert cli.notebook_parameters(nb) == {"profile": "lab", "seed": 0, "beta": 1000.0}


def test_notebook_without_parameters_cell_is_an_error(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(cli.CLIError, match="no cell tagged 'parameters'"):
        cli.notebook_parameters(nb)


def test_parse_assignment():
    assert cli.parse_assignment("beta=1e3") == ("beta", 1000.0)
    assert cli.parse_assignment("dataset=cifar10") == ("dataset", "cifar10")
    assert cli.parse_assignment("sweep=[1, 2]") == ("sweep", [1, 2])
    with pytest.raises(cli.CLIError, match="key=value"):
        cli.parse_assignment("beta")


def test_unknown_parameter_fails_before_running(tmp_path, capsys):
    nb = _notebook(tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\n',
                   "raise SystemExit('must not run')")
    code = cli.main(["run", str(nb), "-p", "betta=3"])
    err = capsys.readouterr().err
    assert code == 2 and "no parameter 'betta'" in err and "profile, seed" in err


def test_bad_value_fails_before_running(tmp_path, capsys):
    nb = _notebook(tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\n', "pass")
    assert cli.main(["run", str(nb), "--seeds", "0,x"]) == 2
    assert cli.main(["run", str(nb), "-p", "seed=-3"]) == 2
    assert "seed" in capsys.readouterr().err


def test_run_executes_reports_and_keeps_going_after_a_failure(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb", "seed = 0\n", "print('seed', seed)")
    bad = _notebook(tmp_path / "bad.ipynb", "seed = 0\n", "raise ValueError('broken on purpose')")
    out = tmp_path / "out"
    code = cli.main(["run", str(bad), str(good), "--seeds", "1", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    assert "bad-s1" in text and "FAILED" in text and "good-s1" in text and "ok" in text
    executed = json.loads((out / "good-s1.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"]
                      for o in c.get("outputs", []))
    assert "seed 1" in printed


def test_unknown_notebook_name_lists_choices(capsys):
    assert cli.main(["run", "99_nothing"]) == 2
    assert "not found" in capsys.readouterr().err
