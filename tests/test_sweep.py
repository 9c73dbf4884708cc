"""Sweeps: notebook parameters, grids, jobs, and the checks made before anything runs."""

import json

import pytest

from atcourse import sweep


def test_notebook_parameters_reads_literals(tmp_path, make_notebook):
    nb = make_notebook(tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\nbeta = 1e3\n', "pass")
    assert sweep.notebook_parameters(nb) == {"profile": "lab", "seed": 0, "beta": 1000.0}


def test_notebook_without_parameters_cell_is_an_error(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(sweep.SweepError, match="no cell tagged 'parameters'"):
        sweep.notebook_parameters(nb)


def test_parse_assignment():
    assert sweep.parse_assignment("beta=1e3") == ("beta", 1000.0)
    assert sweep.parse_assignment("dataset=cifar10") == ("dataset", "cifar10")
    assert sweep.parse_assignment("sweep=[1, 2]") == ("sweep", [1, 2])
    with pytest.raises(sweep.SweepError, match="key=value"):
        sweep.parse_assignment("beta")


def test_sweep_expansion(tmp_path, make_notebook):
    nb = make_notebook(
        tmp_path / "a.ipynb",
        'profile = "lab"\nseed = 0\nbeta = None\nat_mode = "code"\nmilestones = None\n',
        "pass",
    )
    jobs = sweep.expand_jobs(
        [nb], ["beta=1e2,1e3", "at_mode=code,paper", "milestones=0.3,0.6"], [0, 1],
        {"profile": "smoke"},
    )  # fmt: skip
    assert len(jobs) == 2 * 2 * 2  # beta x at_mode x seeds; milestones is one tuple
    first = jobs[0]
    assert first.params == {
        "profile": "smoke", "beta": 100.0, "at_mode": "code", "milestones": [0.3, 0.6], "seed": 0,
    }  # fmt: skip
    assert first.name == "a-beta=100-at_mode=code-s0"
    assert first.variant == "beta=100-at_mode=code-milestones=0.3,0.6"
    assert [j.name for j in jobs[:3]] == [
        "a-beta=100-at_mode=code-s0", "a-beta=100-at_mode=code-s1", "a-beta=100-at_mode=paper-s0",
    ]  # fmt: skip
    assert {(j.params["beta"], j.params["at_mode"], j.params["seed"]) for j in jobs} == {
        (b, m, s) for b in (100.0, 1000.0) for m in ("code", "paper") for s in (0, 1)
    }
    knob = make_notebook(tmp_path / "k.ipynb", "seed = 0\nskip = []\nbeta = None\n", "pass")
    only_view = sweep.expand_jobs([knob], ["skip=kd,at"])  # a notebook knob: shared runs
    assert len(only_view) == 1 and only_view[0].params["skip"] == ["kd", "at"]
    assert only_view[0].variant is None
    plain = sweep.expand_jobs([nb], [], [3])
    assert plain[0].name == "a-s3" and plain[0].variant is None and plain[0].params == {"seed": 3}
    bracket = sweep.expand_jobs([nb], ["beta=[1, 2, 3]"])
    assert [j.params["beta"] for j in bracket] == [1.0, 2.0, 3.0] or [
        j.params["beta"] for j in bracket
    ] == [1, 2, 3]


def test_sweep_errors_name_the_rule(tmp_path, make_notebook):
    nb = make_notebook(
        tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\nbeta = None\nmilestones = None\n', "pass"
    )
    with pytest.raises(sweep.SweepError, match="--seeds"):
        sweep.expand_jobs([nb], ["seed=1,2"])
    with pytest.raises(sweep.SweepError, match="one job per value"):
        sweep.expand_jobs([nb], ["beta=1e3,-1"])
    with pytest.raises(sweep.SweepError, match="takes a tuple.*no grid over tuple"):
        sweep.expand_jobs([nb], ["milestones=0.3,2.0"])
    with pytest.raises(sweep.SweepError, match="given twice"):
        sweep.expand_jobs([nb], ["profile=smoke"], base={"profile": "lab"})


def test_gpus_for_the_jobs_are_parsed_found_and_handed_out_in_turn():
    assert sweep.parse_devices("0, 1,3") == ["0", "1", "3"]
    assert sweep.parse_devices("none") == []
    with pytest.raises(sweep.SweepError, match="GPU numbers separated by commas"):
        sweep.parse_devices("cuda:0")
    with pytest.raises(sweep.SweepError, match="lists a GPU twice"):
        sweep.parse_devices("0,0")
    # the caller's CUDA_VISIBLE_DEVICES holds physical numbers: the jobs get those
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert sweep.visible_gpus({}, count=3) == ["0", "1", "2"]
    assert sweep.device_slots(["0", "1", "2", "3"], 2) == ["0", "1"]  # one GPU per job
    assert sweep.device_slots(["0", "1"], 3) == ["0", "1", "0"]  # more jobs: in turn
    assert sweep.device_slots([], 4) == []  # no GPUs: the jobs' environment is left alone
    with pytest.raises(sweep.SweepError, match="positive"):
        sweep.device_slots(["0"], 0)
