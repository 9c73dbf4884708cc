"""The atcourse command: parameter checks before launching, summaries, exit codes."""

import json

import pytest

from atcourse import cli


def _notebook(path, params_src, body_src):
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": "params",
                "metadata": {"tags": ["parameters"]},
                "source": params_src,
                "outputs": [],
                "execution_count": None,
            },
            {
                "cell_type": "code",
                "id": "body",
                "metadata": {},
                "source": body_src,
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
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
    nb = _notebook(
        tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\n', "raise SystemExit('must not run')"
    )
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
    printed = "".join(
        "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])
    )
    assert "seed 1" in printed


def test_unknown_notebook_name_lists_choices(capsys):
    assert cli.main(["run", "99_nothing"]) == 2
    assert "not found" in capsys.readouterr().err


def test_student_command_writes_editions(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    _notebook(
        src / "01_x.ipynb",
        "seed = 0\n",
        "def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n",
    )
    out = tmp_path / "student"
    assert cli.main(["student", "--source", str(src), "--output", str(out)]) == 0
    text = (out / "01_x.ipynb").read_text()
    assert "NotImplementedError" in text and "return 1" not in text


def test_train_command_trains_a_distilled_student(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("ATCOURSE_PROFILE", raising=False)
    common = [
        "--profile",
        "smoke",
        "--device",
        "cpu",
        "-p",
        "train_size=64",
        "-p",
        "test_size=32",
        "-p",
        "batch_size=32",
        "-p",
        "teacher_epochs=1",
    ]
    code = cli.main(
        [
            "train",
            "--arch",
            "wrn_10_1",
            "--teacher",
            "wrn_10_1",
            "--method",
            "kd",
            "-p",
            "T=2.0",
            *common,
        ]
    )
    assert code == 0
    record = json.loads(next((tmp_path / "runs").glob("kd-*/record.json")).read_text())
    assert record["hparams"]["T"] == 2.0 and record["teacher"] == "wrn_10_1"
    assert cli.main(["train", "--method", "distill_everything", *common]) == 2
    assert "choose one of" in capsys.readouterr().err
