"""The atcourse command: parameter checks before launching, summaries, exit codes."""

import json
import re

import pytest

from atcourse import cli


def test_unknown_parameter_fails_before_running(tmp_path, capsys, make_notebook):
    nb = make_notebook(
        tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\n', "raise SystemExit('must not run')"
    )
    code = cli.main(["run", str(nb), "-p", "betta=3"])
    err = capsys.readouterr().err
    assert code == 2 and "no parameter 'betta'" in err and "profile, seed" in err


def test_bad_value_fails_before_running(tmp_path, capsys, make_notebook):
    nb = make_notebook(tmp_path / "a.ipynb", 'profile = "lab"\nseed = 0\n', "pass")
    assert cli.main(["run", str(nb), "--seeds", "0,x"]) == 2
    assert cli.main(["run", str(nb), "-p", "seed=-3"]) == 2
    assert "seed" in capsys.readouterr().err


def _printed(path):
    executed = json.loads(path.read_text())
    return "".join(
        "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])
    )


def test_run_executes_reports_and_keeps_going_after_a_failure(tmp_path, capsys, make_notebook):
    good = make_notebook(tmp_path / "good.ipynb", "seed = 0\n", "print('seed', seed)")
    bad = make_notebook(
        tmp_path / "bad.ipynb", "seed = 0\n", "raise ValueError('broken on purpose')"
    )
    out = tmp_path / "out"
    code = cli.main(["run", str(bad), str(good), "--seeds", "1", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    summary = text[text.rindex("notebook job") :]
    assert re.search(r"bad-s1 +FAILED .*broken on purpose", summary)
    assert re.search(r"good-s1 +ok ", summary)
    assert "seed 1" in _printed(out / "good-s1" / "good.ipynb")  # ran after the failure
    job = json.loads((out / "bad-s1" / "job.json").read_text())
    assert job["status"] == "FAILED" and "broken on purpose" in job["error"]


def test_resume_skips_finished_jobs(tmp_path, capsys, make_notebook):
    counter = tmp_path / "count.txt"
    body = f"with open({str(counter)!r}, 'a') as fh:\n    fh.write(f'{{seed}}\\n')"
    nb = make_notebook(tmp_path / "c.ipynb", "seed = 0\n", body)
    out = tmp_path / "out"
    args = ["run", str(nb), "--seeds", "0,1", "--output", str(out), "--resume"]
    assert cli.main(args) == 0
    assert counter.read_text().split() == ["0", "1"]
    (out / "c-s1" / "job.json").write_text(
        (out / "c-s1" / "job.json").read_text().replace('"ok"', '"FAILED"')
    )  # a job that failed last time runs again
    capsys.readouterr()
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"c-s0 +skipped", text) and re.search(r"c-s1 +ok", text)
    assert counter.read_text().split() == ["0", "1", "1"]
    assert cli.main(args[:-1]) == 0  # without --resume everything runs
    assert counter.read_text().split() == ["0", "1", "1", "0", "1"]


_TEACHER_BODY = """
import os
from atcourse import config, zoo
cfg = config.configure("smoke", verbose=False, device="cpu", train_size=64, test_size=32,
                       batch_size=32, teacher_epochs=1, teacher_profile="smoke", seed=0)
t = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
print("cached", t.zoo_info["cached"], "threads", os.environ.get("OMP_NUM_THREADS"))
"""


def test_parallel_jobs_share_one_teacher(tmp_path, monkeypatch, capsys, make_notebook):
    # Two notebooks at once ask the zoo for the same teacher: it is trained once, and each
    # kernel gets its share of the CPU threads (the --threads given here).
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("ATCOURSE_PROFILE", raising=False)
    nbs = [make_notebook(tmp_path / f"t{i}.ipynb", "seed = 0\n", _TEACHER_BODY) for i in (1, 2)]
    bad = make_notebook(
        tmp_path / "bad.ipynb", "seed = 0\n", "raise ValueError('broken on purpose')"
    )
    out = tmp_path / "out"
    argv = ["run", str(bad), *map(str, nbs), "--jobs", "2", "--threads", "1", "--output", str(out)]
    assert cli.main(argv) == 1  # the failure is in the exit status...
    text = capsys.readouterr().out
    summary = text[text.rindex("notebook job") :]
    assert re.search(r"bad +FAILED .*ValueError: broken on purpose", summary)  # ...and the summary
    assert re.search(r"t1 +ok ", summary) and re.search(r"t2 +ok ", summary)
    assert "broken on purpose" in (out / "bad" / "papermill.log").read_text()
    printed = [_printed(out / f"t{i}" / f"t{i}.ipynb") for i in (1, 2)]
    assert sorted("cached True" in p for p in printed) == [False, True]
    assert all("threads 1" in p for p in printed)
    assert len(list((tmp_path / "data" / "checkpoints").glob("teacher-*.pt"))) == 1


def test_unknown_notebook_name_lists_choices(capsys):
    assert cli.main(["run", "99_nothing"]) == 2
    assert "not found" in capsys.readouterr().err


def test_student_command_writes_editions(tmp_path, capsys, make_notebook):
    src = tmp_path / "nb"
    src.mkdir()
    make_notebook(
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
        "-p",
        "teacher_profile=smoke",
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
    tune = ["train", "--arch", "wrn_10_1", "--teacher", "wrn_10_1", "--method", "kd", "--tune"]
    assert cli.main([*tune, "-p", "T=8", "-p", "val_size=32", *common]) == 0
    assert "validation accuracy" in capsys.readouterr().out
    tuned = tmp_path / "runs" / "kd-val-T8-wrn_10_1-shapes-smoke-s0" / "record.json"
    record = json.loads(tuned.read_text())  # a choice's run: never reads the test split
    assert "test_acc" not in record["final"] and record["hparams"]["T"] == 8.0
    assert "val_acc" in record["history"][-1]


def test_results_command_prints_exports_and_updates_the_page(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, acc in [(0, 0.8), (1, 0.9)]:
        d = runs / f"kd-wrn_16_1-shapes-lab-s{seed}"
        d.mkdir(parents=True)
        record = {
            "name": d.name, "method": "kd", "student": "wrn_16_1", "teacher": "wrn_16_2",
            "hparams": {"T": 4.0}, "complete": True, "updated": "2026-01-01T00:00:00+00:00",
            "params": {"dataset": "shapes", "profile": "lab", "seed": seed},
            "final": {"test_acc": acc, "epoch_time_s": 20.0},
        }  # fmt: skip
        (d / "record.json").write_text(json.dumps(record))
    assert cli.main(["results", "--runs", str(runs), "--profile", "lab"]) == 0
    assert "| kd | kd | wrn_16_2 → wrn_16_1 | shapes | lab | 2 | 85.00 ± 7.07 |" in (
        capsys.readouterr().out
    )
    assert (
        cli.main(["results", "--runs", str(runs), "--csv", "--output", str(tmp_path / "lb.csv")])
        == 0
    )
    assert (tmp_path / "lb.csv").read_text().startswith("label,method,")
    assert cli.main(["results", "--runs", str(runs), "--profile", "full"]) == 1
    assert "no complete run records" in capsys.readouterr().err
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- atcourse:leaderboard profile=lab dataset=shapes -->\n<!-- atcourse:end -->\n"
    )
    assert cli.main(["results", "--runs", str(runs), "--page", str(page)]) == 0
    assert "85.00 ± 7.07" in page.read_text() and "--seeds 0,1" in page.read_text()
    assert cli.main(["results", "--anchors", "--csv"]) == 0
    assert "Zagoruyko" in capsys.readouterr().out


@pytest.mark.slow
def test_each_job_running_at_once_gets_its_own_gpu(tmp_path, capsys, make_notebook):
    body = "import os\nprint('gpu', os.environ.get('CUDA_VISIBLE_DEVICES'))"
    nbs = [make_notebook(tmp_path / f"g{i}.ipynb", "seed = 0\n", body) for i in (1, 2)]
    out = tmp_path / "out"
    argv = ["run", *map(str, nbs), "--jobs", "2", "--devices", "3,5", "--output", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "on GPU(s) 3,5" in text
    gpus = []
    for i in (1, 2):
        job = json.loads((out / f"g{i}" / "job.json").read_text())
        assert f"gpu {job['gpu']}" in _printed(out / f"g{i}" / f"g{i}.ipynb")  # where it ran
        assert re.search(rf"ok +g{i} \(\d+ s on GPU {job['gpu']}\)", text)  # and says so
        gpus.append(job["gpu"])
    assert sorted(gpus) == ["3", "5"]  # the two ran at once, on two GPUs
    # one job at a time: the notebook runs in this process's kernel, on the GPU given
    assert cli.main(["run", str(nbs[0]), "--devices", "7", "--output", str(out / "one")]) == 0
    assert "gpu 7" in _printed(out / "one" / "g1" / "g1.ipynb")
