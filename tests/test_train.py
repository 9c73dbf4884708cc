"""The training loop: it learns, logs every term, stops on NaN, checkpoints atomically, resumes."""

import json

import pytest
import torch
from torch import nn

from atcourse import config, models
from atcourse.data import load_dataset
from atcourse.distill import Baseline, Distiller, DistillOutput
from atcourse.train import NonFiniteLossError, RunExistsError, fit, lr_at


def _tiny(n_train=256, n_test=128, **over):
    cfg = config.configure(
        "smoke",
        verbose=False,
        device="cpu",
        train_size=n_train,
        test_size=n_test,
        batch_size=64,
        **over,
    )
    train_set = load_dataset("shapes", "train", size=n_train)
    test_set = load_dataset("shapes", "test", size=n_test)
    return cfg, train_set, test_set


def test_history_logs_every_term_and_record_is_written(tmp_path):
    cfg, tr, te = _tiny(epochs=2)
    result = fit(Baseline(models.build("wrn_10_1")), cfg, tr, te, name="t", progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    row = result.history[-1]
    for key in (
        "loss_ce",
        "loss_total",
        "train_acc",
        "test_acc",
        "images_per_s",
        "lr",
        "train_time_s",
        "wall_time_s",
    ):
        assert key in row, key
    record = json.loads((result.run_dir / "record.json").read_text())
    assert record["complete"] and record["method"] == "baseline"
    assert record["params"]["epochs"] == 2 and len(record["history"]) == 2
    assert record["final"]["test_acc"] == pytest.approx(row["test_acc"])


def test_training_reduces_the_loss():
    cfg, tr, te = _tiny(n_train=512, epochs=3, lr=0.05)
    result = fit(
        Baseline(models.build("wrn_10_1")), cfg, tr, te, name="learn", progress=False, record=False
    )
    losses = result.series("loss_ce")
    assert losses[-1] < losses[0]


class _Exploding(Distiller):
    name = "exploding"

    def forward(self, images, labels):
        logits = self.student(images)
        bad = logits.sum() * float("nan")
        return DistillOutput(
            logits, {"ce": nn.functional.cross_entropy(logits, labels), "boom": bad}
        )


def test_nan_stops_with_the_term_named():
    cfg, tr, te = _tiny()
    with pytest.raises(NonFiniteLossError, match="boom.*epoch 1"):
        fit(_Exploding(models.build("wrn_10_1")), cfg, tr, te, progress=False, record=False)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    cfg, tr, te = _tiny(epochs=3)

    torch.manual_seed(0)
    full = fit(
        Baseline(models.build("wrn_10_1")), cfg, tr, te, run_dir=tmp_path / "a", progress=False
    )

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            Baseline(models.build("wrn_10_1")),
            cfg,
            tr,
            te,
            run_dir=tmp_path / "b",
            progress=False,
            callbacks=[interrupt],
        )
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1
    # a fresh process would build a fresh (differently initialised) model: resume must
    # overwrite it completely
    resumed = fit(
        Baseline(models.build("wrn_10_1")),
        cfg,
        tr,
        te,
        run_dir=tmp_path / "b",
        progress=False,
        resume=True,
    )
    assert len(resumed.history) == 3
    for (k, a), b in zip(
        full.method.student.state_dict().items(), resumed.method.student.state_dict().values()
    ):
        assert torch.equal(a, b), k
    assert resumed.history[-1]["test_acc"] == full.history[-1]["test_acc"]


def test_resume_refuses_a_different_recipe(tmp_path):
    cfg, tr, te = _tiny(epochs=1)
    fit(Baseline(models.build("wrn_10_1")), cfg, tr, te, run_dir=tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="different parameters.*lr"):
        fit(
            Baseline(models.build("wrn_10_1")),
            cfg.replace(lr=0.5),
            tr,
            te,
            run_dir=tmp_path / "r",
            progress=False,
            resume=True,
        )


def test_lr_schedules():
    cfg = {
        "lr": 0.1,
        "epochs": 200,
        "schedule": "step",
        "milestones": (0.3, 0.6, 0.8),
        "lr_decay": 0.2,
        "warmup_epochs": 0,
    }
    assert lr_at(cfg, 59.9) == pytest.approx(0.1)
    assert lr_at(cfg, 60) == pytest.approx(0.02)
    assert lr_at(cfg, 170) == pytest.approx(0.1 * 0.2**3)
    cos = dict(cfg, schedule="cosine")
    assert lr_at(cos, 0) == pytest.approx(0.1) and lr_at(cos, 100) == pytest.approx(0.05)
    assert lr_at(cos, 200) == pytest.approx(0.0, abs=1e-12)


def test_fit_rejects_a_plain_model():
    cfg, tr, te = _tiny()
    with pytest.raises(TypeError, match="Baseline"):
        fit(models.build("wrn_10_1"), cfg, tr, te)


def test_teacher_stays_in_eval_mode_and_frozen():
    class WithTeacher(Distiller):
        def forward(self, images, labels):
            logits = self.student(images)
            return DistillOutput(logits, {"ce": nn.functional.cross_entropy(logits, labels)})

    teacher = models.build("wrn_10_1")
    method = WithTeacher(models.build("wrn_10_1"), teacher)
    method.train()
    assert not method.teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher.") for k in method.trainable_state())


def test_resume_refuses_another_method_or_hyperparameters(tmp_path):
    from atcourse.distill import KD

    cfg, tr, te = _tiny(epochs=1)
    teacher = models.build("wrn_10_1")
    fit(
        KD(models.build("wrn_10_1"), teacher, T=4.0),
        cfg,
        tr,
        te,
        run_dir=tmp_path / "k",
        progress=False,
    )
    with pytest.raises(ValueError, match="different parameters.*hparams"):
        fit(
            KD(models.build("wrn_10_1"), teacher, T=2.0),
            cfg,
            tr,
            te,
            run_dir=tmp_path / "k",
            progress=False,
            resume=True,
        )
    with pytest.raises(ValueError, match="different parameters.*method"):
        fit(
            Baseline(models.build("wrn_10_1")),
            cfg,
            tr,
            te,
            run_dir=tmp_path / "k",
            progress=False,
            resume=True,
        )
    done = fit(
        KD(models.build("wrn_10_1"), teacher, T=4.0),
        cfg,
        tr,
        te,
        run_dir=tmp_path / "k",
        progress=False,
        resume=True,
    )
    assert len(done.history) == 1  # the completed run is returned, not retrained


def test_resume_auto_reuses_a_matching_run_and_refuses_another(tmp_path):
    from atcourse.distill import KD

    cfg, tr, te = _tiny(epochs=1)
    teacher = models.build("wrn_10_1")
    first = fit(
        KD(models.build("wrn_10_1"), teacher, T=4.0),
        cfg,
        tr,
        te,
        run_dir=tmp_path / "k",
        progress=False,
    )
    same = fit(
        KD(models.build("wrn_10_1"), teacher, T=4.0),
        cfg,
        tr,
        te,
        run_dir=tmp_path / "k",
        progress=False,
        resume="auto",
    )
    assert same.history[0]["wall_time_s"] == first.history[0]["wall_time_s"]  # reused
    with pytest.raises(RunExistsError, match="different parameters.*--replace"):
        fit(KD(models.build("wrn_10_1"), teacher, T=2.0), cfg, tr, te, run_dir=tmp_path / "k",
            progress=False, resume="auto")  # fmt: skip
    other = fit(KD(models.build("wrn_10_1"), teacher, T=2.0), cfg, tr, te,
                run_dir=tmp_path / "k", progress=False, replace=True)  # fmt: skip
    assert other.history[0]["wall_time_s"] != first.history[0]["wall_time_s"]  # retrained


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path, capsys):
    # Another process (here: a lock taken by the test itself, as flock locks conflict
    # between open files even within one process) is training the run: fit waits for it.
    import threading
    import time

    from atcourse import paths

    cfg, tr, te = _tiny(n_train=64, n_test=32, epochs=1)
    done = []

    def train():
        result = fit(Baseline(models.build("wrn_10_1")), cfg, tr, te, run_dir=tmp_path / "r",
                     progress=False, resume=True)  # fmt: skip
        done.append(result)

    with paths.file_lock(tmp_path / "r" / ".lock"):
        worker = threading.Thread(target=train)
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not done  # waiting, not training
    worker.join(timeout=120)
    assert len(done) == 1 and len(done[0].history) == 1
    assert "waiting for run" in capsys.readouterr().out


def test_make_optimizer():
    from atcourse.train import make_optimizer

    cfg, _, _ = _tiny()
    model = models.build("vit_tiny", depth=1, dim=32, heads=2)
    sgd = make_optimizer(list(model.parameters()), cfg)
    assert isinstance(sgd, torch.optim.SGD)
    adamw = make_optimizer(list(model.parameters()), cfg.replace(optimizer="adamw"))
    assert isinstance(adamw, torch.optim.AdamW)
    decay, no_decay = adamw.param_groups
    assert decay["weight_decay"] == cfg.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.dim() <= 1 for p in no_decay["params"])
    n = sum(p.numel() for g in adamw.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_adamw_run_resumes_only_as_adamw(tmp_path):
    cfg, tr, te = _tiny(epochs=1, optimizer="adamw", lr=1e-3)
    run_dir = tmp_path / "r"
    fit(Baseline(models.build("wrn_10_1")), cfg, tr, te, run_dir=run_dir, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        fit(
            Baseline(models.build("wrn_10_1")),
            cfg.replace(optimizer="sgd", epochs=2),
            tr,
            te,
            run_dir=run_dir,
            resume=True,
            progress=False,
        )
