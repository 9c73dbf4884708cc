"""A catalogue of bad input and faults, tried as a user would: runs, parameters, commands.

Each case asserts that the message names the input, the problem and the fix, and that what
was already on disk is intact afterwards. The data layer's cases (damaged images, archives,
caches) are in ``test_bad_inputs_data.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from atcourse import cli, config, experiments, models, paths, records, student, sweep, zoo
from atcourse.config import ConfigError, configure
from atcourse.data import load_dataset
from atcourse.distill import Baseline, build_method
from atcourse.runtime import resolve_device
from atcourse.train import CHECKPOINT, NonFiniteLossError, RunExistsError, fit

TINY = ["--profile", "smoke", "--device", "cpu", "-p", "train_size=64", "-p", "test_size=32",
        "-p", "val_size=16", "-p", "batch_size=32", "-p", "teacher_epochs=1",
        "-p", "teacher_profile=smoke"]  # fmt: skip


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file below the roots, by content hash: what must be intact after a bad call."""
    out = {}
    for root in roots:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p.suffix != ".lock":
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def roots(isolated_roots: Path) -> tuple[Path, Path]:
    return isolated_roots / "data", isolated_roots / "runs"


def _cfg(**over):
    values = {"device": "cpu", "train_size": 64, "test_size": 32, "batch_size": 32, "epochs": 1}
    return configure("smoke", verbose=False, **{**values, **over})


def _data():
    return load_dataset("shapes", "train", size=64), load_dataset("shapes", "test", size=32)


def _fit(run_dir, cfg=None, **kw):
    train, test = _data()
    model = models.build("wrn_10_1", seed=0)
    return fit(Baseline(model), cfg or _cfg(), train, test, run_dir=run_dir, progress=False, **kw)


# ----------------------------------------------------------------------------- the two bugs


def test_list_parameters_reach_a_notebook_as_lists_one_job_at_a_time(tmp_path, make_notebook):
    # was: "parameter 'sweep' must be tuple, not str '(1, 2, 4)'" with one job, fine with two
    nb = make_notebook(
        tmp_path / "n.ipynb",
        "sweep = None\n",
        "assert isinstance(sweep, list), repr(sweep)\nprint('got', sweep)",
    )
    (job,) = sweep.expand_jobs([nb], ["sweep=1,2,4"])
    assert job.params == {"sweep": [1, 2, 4]}
    assert json.loads(json.dumps(job.params)) == job.params  # papermill -y sends the same
    out = tmp_path / "out"
    assert sweep.run_sweep([nb], ["sweep=1,2,4"], output=out) == 0
    text = (out / "n" / "n.ipynb").read_text()
    assert "got [1, 2, 4]" in text


def test_the_same_train_command_twice_gives_the_same_weights(roots, capsys):
    # was: 69 of 82 tensors differed after one epoch (the model was built before seeding)
    torch.manual_seed(1234)  # whatever ran before must not matter
    args = ["train", "--arch", "wrn_10_1", *TINY]
    assert cli.main([*args, "--name", "one"]) == 0
    torch.manual_seed(99)
    assert cli.main([*args, "--name", "two"]) == 0
    a = torch.load(records.run_dir("one") / CHECKPOINT, weights_only=False)["method"]
    b = torch.load(records.run_dir("two") / CHECKPOINT, weights_only=False)["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- runs


def test_a_finished_run_of_another_setting_is_refused_not_replaced(roots, capsys):
    args = ["train", "--arch", "wrn_10_1", "--name", "X", *TINY]
    assert cli.main(args) == 0
    before = _snapshot(roots[1])
    assert cli.main([*args, "-p", "lr=0.2"]) == 2
    err = capsys.readouterr().err
    assert "different parameters" in err and "'lr'" in err
    assert "--replace" in err and "--resume" in err and "--name" in err
    assert _snapshot(roots[1]) == before
    assert cli.main([*args, "-p", "lr=0.2", "--replace"]) == 0  # the explicit way


def test_the_same_run_asked_for_again_is_returned_not_retrained(roots, capsys):
    args = ["train", "--arch", "wrn_10_1", "--name", "X", *TINY]
    assert cli.main(args) == 0
    ckpt = records.run_dir("X") / CHECKPOINT
    stamp = ckpt.stat().st_mtime_ns
    assert cli.main(args) == 0  # as a second process started with the same command would
    assert ckpt.stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.count("test accuracy") == 2


def test_fit_refuses_any_run_there_without_resume(tmp_path):
    _fit(tmp_path / "r")
    with pytest.raises(RunExistsError, match="finished run of this setting.*resume=True"):
        _fit(tmp_path / "r", resume=False)


def test_a_truncated_checkpoint_names_its_file_and_the_way_out(tmp_path):
    _fit(tmp_path / "r", cfg=_cfg(epochs=2))
    ckpt = tmp_path / "r" / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (tmp_path / "r" / "checkpoint.prev.pt").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(
        RunExistsError, match=r"checkpoint .*checkpoint\.pt cannot be read.*replace"
    ):
        _fit(tmp_path / "r", cfg=_cfg(epochs=3), resume=True)
    assert _snapshot(tmp_path) == before


def test_a_corrupt_checkpoint_resumes_from_the_epoch_before(tmp_path):
    full = _fit(tmp_path / "a", cfg=_cfg(epochs=3))

    def stop(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", cfg=_cfg(epochs=3), callbacks=[stop])
    ckpt = tmp_path / "b" / CHECKPOINT
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flipped bytes: caught by the digest
    ckpt.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match the SHA-256.*epoch before"):
        resumed = _fit(tmp_path / "b", cfg=_cfg(epochs=3), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.method.state_dict().values(), resumed.method.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_auto_starts_afresh_when_the_checkpoint_is_unreadable(tmp_path):
    _fit(tmp_path / "r")
    (tmp_path / "r" / CHECKPOINT).write_bytes(b"not a checkpoint")
    (tmp_path / "r" / "checkpoint.prev.pt").unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="cannot be read.*starting this run afresh"):
        result = _fit(tmp_path / "r", resume="auto")
    assert len(result.history) == 1


def test_a_corrupt_zoo_teacher_is_trained_again_with_a_warning(roots):
    cfg = _cfg(teacher_epochs=1, teacher_profile="smoke")
    zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    path = zoo.checkpoint_path("wrn_10_1", cfg.replace(epochs=1, arch="wrn_10_1"))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(UserWarning, match=re.escape(path.name) + ".*training it again"):
        again = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    assert again.zoo_info["cached"] is False
    paths.verify_digest(path)  # rewritten whole


def test_precision_is_part_of_a_runs_identity(tmp_path):
    _fit(tmp_path / "r", cfg=_cfg(precision="fp32"))
    before = _snapshot(tmp_path)
    with pytest.raises(RunExistsError, match="'precision': \\('fp32', 'bf16 autocast'\\)"):
        _fit(tmp_path / "r", cfg=_cfg(precision="bf16"))
    assert _snapshot(tmp_path) == before


def test_a_truncated_record_is_reported_not_silently_dropped(tmp_path):
    _fit(tmp_path / "r")
    record = tmp_path / "r" / "record.json"
    record.write_text(record.read_text()[:50])
    with pytest.warns(UserWarning, match=r"record\.json cannot be read"):
        assert records.load_records(tmp_path) == []


def test_a_runs_folder_that_is_a_file(roots, monkeypatch, capsys):
    blocker = roots[1].parent / "runs-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ATCOURSE_RUNS", str(blocker))
    with pytest.raises(paths.FolderError, match="is a file, not a folder.*ATCOURSE_RUNS"):
        _fit(None)
    assert cli.main(["doctor", "--device", "cpu"]) == 1
    assert "runs folder" in capsys.readouterr().out and blocker.read_text() == "not a folder"


def test_a_finished_run_is_read_without_taking_its_lock(tmp_path, monkeypatch):
    _fit(tmp_path / "r")

    def no_lock(*args, **kwargs):
        raise AssertionError("a finished run must be returned without writing a lock")

    monkeypatch.setattr(paths, "file_lock", no_lock)  # as in a read-only runs folder
    assert len(_fit(tmp_path / "r").history) == 1


def test_a_nan_loss_names_the_term(tmp_path):  # answered well already
    from atcourse.distill import Distiller, DistillOutput

    class Exploding(Distiller):
        name = "exploding"

        def forward(self, images, labels):
            logits = self.student(images)
            return DistillOutput(logits, {"boom": logits.sum() * float("nan")})

    train, test = _data()
    with pytest.raises(NonFiniteLossError, match="boom.*epoch 1.*lower lr"):
        fit(Exploding(models.build("wrn_10_1")), _cfg(), train, test, progress=False,
            record=False)  # fmt: skip


def test_a_nan_diagnostic_does_not_stop_a_run(tmp_path):
    from atcourse.distill import Distiller, DistillOutput

    class Reporting(Distiller):
        name = "reporting"

        def forward(self, images, labels):
            logits = self.student(images)
            ce = torch.nn.functional.cross_entropy(logits, labels)
            return DistillOutput(logits, {"ce": ce}, {}, {"odd": ce.detach() * float("nan")})

    train, test = _data()
    result = fit(Reporting(models.build("wrn_10_1")), _cfg(), train, test, progress=False,
                 record=False)  # fmt: skip
    row = result.history[0]
    assert row["diag_odd"] != row["diag_odd"] and row["loss_total"] == row["loss_total"]


def test_a_plain_model_or_a_tiny_set_is_explained(tmp_path):  # answered well already
    train, test = _data()
    with pytest.raises(TypeError, match="wrap a plain model as atcourse.distill.Baseline"):
        fit(models.build("wrn_10_1"), _cfg(), train, test)
    with pytest.raises(ValueError, match="smaller than one batch.*lower batch_size"):
        fit(Baseline(models.build("wrn_10_1")), _cfg(batch_size=128), train, test,
            record=False, progress=False)  # fmt: skip


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"epoch": 3}, ["'epoch'", "Did you mean 'epochs'"]),  # answered well already
        ({"epochs": 0}, ["epochs", ">= 1"]),
        ({"pretrain_classes": ("a", 1)}, ["pretrain_classes", "element 'a'", "int"]),
        ({"milestones": 0.5}, ["milestones", "one-element tuple is written (0.5,)"]),
        ({"attn_layers": (0, "x")}, ["attn_layers", "element 'x'"]),
        ({"cat_pair": "wrn/wrn"}, ["cat_pair", "resnet32x4/resnet8x4"]),
        ({"at_mode": "codes"}, ["at_mode", "'code', 'paper'"]),
    ],
)
def test_bad_parameter_values_name_the_parameter_and_the_fix(kwargs, words, roots):
    with pytest.raises(ConfigError) as err:
        configure("smoke", verbose=False, **kwargs)
    for word in words:
        assert word in str(err.value)
    assert _snapshot(*roots) == {}


def test_an_unknown_profile_lists_the_profiles():  # answered well already
    with pytest.raises(ConfigError, match="smoke.*lab.*full"):
        configure("huge", verbose=False)


def test_a_name_papermill_injects_that_the_notebook_does_not_declare():
    params_cell = 'profile = "lab"\nbeta = None\n'
    injected = '# Parameters\nprofile = "smoke"\nbetta = 3\n'
    with pytest.raises(ConfigError, match="papermill set 'betta'.*parameters are: beta, profile"):
        config.check_injected({"In": ["", params_cell, injected, "cfg = configure(...)"]})
    config.check_injected({"In": ["", params_cell, "# Parameters\nbeta = 3\n"]})  # declared
    config.check_injected({})  # not under IPython: nothing to check


def test_a_knob_the_method_does_not_use_is_refused(roots, capsys):
    code = cli.main(["train", "--method", "baseline", "-p", "beta=1000", "--arch", "wrn_10_1",
                     *TINY])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "method 'baseline' does not use beta" in err and "drop those -p values" in err
    assert _snapshot(*roots) == {}  # refused before anything was loaded or written


def test_an_option_given_twice_is_one_clear_error(roots, capsys):
    assert cli.main(["train", "--arch", "wrn_10_1", "-p", "arch=wrn_16_1", *TINY]) == 2
    assert "-p arch=... duplicates the option --arch" in capsys.readouterr().err
    assert cli.main(["train", "-p", "epochs=2", "-p", "epochs=3", *TINY]) == 2
    assert "-p epochs=... is given twice" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--arch", "--teacher"])
def test_a_bad_architecture_is_named_by_its_option_before_any_data_loads(flag, roots, capsys):
    assert cli.main(["train", "--method", "kd", flag, "wrn_99", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{flag} 'wrn_99' is not a model" in err and "depth = 6n+4" in err
    assert _snapshot(*roots) == {}  # nothing generated, nothing trained


def test_tune_without_a_validation_split_is_refused_before_any_data_loads(roots, capsys):
    tiny = [a if a != "val_size=16" else "val_size=0" for a in TINY]
    assert cli.main(["train", "--tune", *tiny]) == 2
    err = capsys.readouterr().err
    assert "--tune" in err and "val_size=0" in err and "drop -p val_size=0" in err
    assert _snapshot(*roots) == {}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--classes", "0,one"], "--classes expects class indices like 0,1,2, got '0,one'"),
        (["--arch", "wrn_99"], "--arch 'wrn_99' is not a model"),
        (["-p", "lr=0.1", "-p", "lr=0.2"], "-p lr=... is given twice"),
    ],
)
def test_a_bad_teacher_command_names_its_option_before_any_data_loads(args, words, roots, capsys):
    assert cli.main(["teacher", "--profile", "smoke", *args]) == 2
    assert words in capsys.readouterr().err
    assert _snapshot(*roots) == {}


def test_an_unknown_method_or_notebook_lists_the_choices(capsys):  # answered well already
    assert cli.main(["train", "--method", "distill_everything", *TINY]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert cli.main(["run", "99_nothing"]) == 2
    assert "choose from" in capsys.readouterr().err


def test_sweep_values_are_checked_before_anything_runs(tmp_path, make_notebook):
    nb = make_notebook(tmp_path / "a.ipynb", "seed = 0\npretrain_classes = (0, 1)\n",
                       "raise SystemExit('must not run')")  # fmt: skip
    with pytest.raises(sweep.SweepError, match="element 'abc'"):
        sweep.expand_jobs([nb], ["pretrain_classes=abc"])
    with pytest.raises(sweep.SweepError, match="--seeds"):
        sweep.expand_jobs([nb], ["seed=1,2"])


def test_a_method_variant_refuses_what_it_fixes_or_does_not_take():
    student, teacher = models.build("wrn_10_1"), models.build("wrn_10_1")
    with pytest.raises(ValueError, match="'cat_kd_bin' fixes cam_binarize=True.*'cat_kd'"):
        build_method("cat_kd_bin", student, teacher, cam_binarize=False)
    with pytest.raises(ValueError, match="trains without a teacher; pass teacher=None"):
        build_method("gradient_at_flip", student, teacher)
    with pytest.raises(ValueError, match="needs a teacher"):
        build_method("kd", student)
    with pytest.raises(ValueError, match="unknown method 'distill_all'"):
        experiments.Entry("x", "distill_all")


def test_a_misspelt_layer_or_model_name_suggests_the_right_one():  # answered well already
    from atcourse.models import TapNameError, Taps

    with pytest.raises(TapNameError, match="group2"):
        Taps(models.build("wrn_10_1"), ["grop2"])
    with pytest.raises(ValueError, match="wrn_16_1"):
        models.build("wrn_16_l")


def test_cuda_asked_for_on_a_machine_without_one():  # answered well already
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="device='cuda' was asked for.*use device='auto'"):
        resolve_device("cuda")


# ----------------------------------------------------------------------------- editions


@pytest.mark.parametrize(
    "line", ["# begin solution", "#BEGIN SOLUTION", "# END SOLUTIONS", "## Begin Solution"]
)
def test_marker_lookalikes_are_refused_not_published(line, tmp_path):
    source = f"def f():\n    {line}\n    return 42\n    # END SOLUTION\n"
    if "END" in line:
        source = f"def f():\n    # BEGIN SOLUTION\n    return 42\n    {line}\n"
    with pytest.raises(student.SolutionMarkerError, match="looks like a solution marker"):
        student.stub_solutions(source, where="01_x.ipynb cell 3")


def test_an_unmatched_marker_names_the_cell():  # answered well already
    with pytest.raises(student.SolutionMarkerError, match="cell 2, line 1.*without"):
        student.stub_solutions("# BEGIN SOLUTION\nx = 1\n", where="cell 2")
