"""One run over several processes: shards of the loader, DDP's gradients, records, resume.

The slow tests start real process groups on the CPU (gloo, 2 processes): one DDP step
against one process on the same global batch, and a 2-epoch run under torchrun that is
killed after its first epoch and resumed, against the same run uninterrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from atcourse import distributed, models
from atcourse.data import DeviceLoader, load_dataset
from atcourse.distill import KD, Distiller, DistillOutput
from atcourse.runtime import precision_for
from atcourse.train import train_step

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the shards


@pytest.mark.parametrize("world", [2, 4])
def test_the_ranks_batches_make_up_the_batch_of_one_process(world):
    data = load_dataset("shapes", "train", size=96)
    one = DeviceLoader(data, 16, train=True, seed=3)
    ranks = [
        DeviceLoader(data, 16, train=True, seed=3, rank=r, world_size=world) for r in range(world)
    ]
    for epoch in (0, 1):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        shares = [list(loader) for loader in ranks]
        assert all(len(loader) == len(one) == 6 for loader in ranks)
        for k, (images, labels) in enumerate(one):
            # rank r holds rows r*b..(r+1)*b of batch k: same images, crops and flips
            assert torch.equal(torch.cat([s[k][0] for s in shares]), images)
            assert torch.equal(torch.cat([s[k][1] for s in shares]), labels)
            assert all(s[k][0].shape[0] == 16 // world for s in shares)


def test_evaluation_shards_cover_every_image_once():
    data = load_dataset("shapes", "test", size=37)  # the last batch (5) splits 1, 1, 1, 2
    one = torch.cat([y for _, y in DeviceLoader(data, 8, train=False)])
    shards = [DeviceLoader(data, 8, train=False, rank=r, world_size=4) for r in range(4)]
    seen = [torch.cat([y for _, y in loader]) for loader in shards]
    assert sum(len(s) for s in seen) == 37
    assert sorted(len(loader) for loader in shards) == [5, 5, 5, 5]
    for k in range(5):  # batch k of one process, cut in four
        assert torch.equal(
            torch.cat([list(loader)[k][1] for loader in shards]), one[8 * k : 8 * k + 8]
        )


def test_a_batch_that_does_not_split_evenly_is_refused():
    data = load_dataset("shapes", "train", size=32)
    with pytest.raises(ValueError, match="batch_size=10 does not split evenly over 4"):
        DeviceLoader(data, 10, train=True, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank 2 is not one of world_size=2"):
        DeviceLoader(data, 8, train=True, rank=2, world_size=2)


# ----------------------------------------------------------------------------- one process


def test_a_single_process_has_no_group_and_no_wrapping():
    assert not distributed.launched() and distributed.world_size() == 1
    assert distributed.rank() == 0 and distributed.is_main()
    model = nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    t = {"a": torch.tensor([1.0, 2.0])}
    assert torch.equal(distributed.all_reduce(t, op="mean")["a"], t["a"])
    assert distributed.from_main(lambda: 7) == 7
    assert distributed.weighted_mean({"acc": 0.5}, 10, torch.device("cpu")) == {"acc": 0.5, "n": 10}
    assert distributed.describe(128, sync_bn=False) == {"world_size": 1}
    assert not torch.distributed.is_initialized()


def test_a_half_set_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set.*torchrun"):
        distributed.rank()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        distributed.world_size()


def test_sync_batch_norm_converts_the_student_and_keeps_its_tensors():
    method = KD(models.build("wrn_10_1", seed=0), models.build("wrn_10_1", seed=1))
    params = {n: p for n, p in method.named_parameters()}
    keys = list(method.state_dict())
    assert distributed.sync_batch_norm(method) is method
    kinds = {n: type(m) for n, m in method.named_modules()}
    student_bn = [
        n for n, k in kinds.items() if n.startswith("student.") and "BatchNorm" in k.__name__
    ]
    assert student_bn and all(kinds[n] is nn.SyncBatchNorm for n in student_bn)
    assert all(k is not nn.SyncBatchNorm for n, k in kinds.items() if n.startswith("teacher"))
    assert list(method.state_dict()) == keys  # checkpoints fit either way
    assert all(p is params[n] for n, p in method.named_parameters())  # the optimizer's own


# ----------------------------------------------------------------------------- DDP's step


class _Matching(Distiller):
    """A student without batch norm, a frozen teacher, and a layer of the method's own."""

    name = "matching"

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(_small_net(), _small_net())
        self.head = nn.Linear(10, 10)

    def forward(self, images, labels):
        logits = self.student(images)
        with torch.no_grad():
            target = self.teacher(images)
        terms = {"ce": F.cross_entropy(logits, labels),
                 "match": F.mse_loss(self.head(logits), target)}  # fmt: skip
        return DistillOutput(logits, terms, {"ce": 1.0, "match": 0.5})


def _small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 10),
    )  # fmt: skip


def _one_step(rank: int, world: int) -> dict[str, torch.Tensor]:
    """One SGD step of the matching method on batch 0; the gradients and the new weights."""
    method = _Matching()
    data = load_dataset("shapes", "train", size=64)
    loader = DeviceLoader(data, 32, train=True, seed=5, rank=rank, world_size=world)
    model = distributed.wrap(method, torch.device("cpu"))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1, momentum=0.9)
    images, labels = next(iter(loader))
    train_step(model, optimizer, precision_for("cpu", "fp32"), images, labels, lr=0.1)
    out = {f"grad/{n}": p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    out.update({f"weight/{n}": p.detach().clone() for n, p in method.named_parameters()})
    return out


def _step_worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    torch.save(_one_step(rank, world), Path(folder) / f"rank{rank}.pt")
    distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_ddp_step_gives_the_gradients_of_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_step_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    one = _one_step(0, 1)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    grads = sorted(k for k in one if k.startswith("grad/"))
    # the student and the method's own layer are trained; the teacher gets no gradient
    assert grads and not any(".teacher." in k or k.startswith("grad/teacher") for k in grads)
    assert any(k.startswith("grad/head") for k in grads)
    for got in ranks:
        assert sorted(k for k in got if k.startswith("grad/")) == grads
        for key, value in one.items():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    teacher = [k for k in one if k.startswith("weight/teacher")]
    assert teacher and all(torch.equal(ranks[1][k], one[k]) for k in teacher)


# ----------------------------------------------------------------------------- a whole run

_DRIVER = """
import json, os, sys, time
from atcourse import cli, distributed, train

pause_after = int(sys.argv[1])  # an epoch index, or -1 for none
out = os.environ["DDP_TEST_OUT"]

def pause(epoch, row):
    # after rank 0 wrote this epoch's checkpoint: say where to kill, and wait for it
    if epoch == pause_after:
        with open(os.path.join(out, f"pid{distributed.rank()}"), "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(600)

def fit(*args, **kwargs):
    result = train.fit(*args, callbacks=[pause], **kwargs)
    weights = dict(result.method.loss_weights.weights)
    with open(os.path.join(out, f"rank{distributed.rank()}.json"), "w") as fh:
        json.dump({"weights": weights, "history": result.history}, fh)
    return result

cli.fit = fit
sys.exit(cli.main(sys.argv[2:]))
"""

_TRAIN = [
    "train", "--method", "aft", "--arch", "wrn_10_1", "--teacher", "wrn_10_1",
    "--profile", "smoke", "--device", "cpu", "-p", "train_size=64", "-p", "val_size=32",
    "-p", "test_size=40", "-p", "batch_size=32", "-p", "epochs=2", "-p", "teacher_epochs=1",
    "-p", "teacher_profile=smoke",
]  # fmt: skip


def _torchrun(tmp_path: Path, args: list[str], out: Path) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (a free port of its own choosing)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DDP_TEST_OUT": str(out),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]  # fmt: skip
    # a session of its own, so that killing its process group spares pytest's
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, stdout, stderr


def _kill_when_paused(proc: subprocess.Popen, out: Path) -> int:
    """SIGKILL torchrun and both ranks (each a process group) once both have paused."""
    pids = [out / f"pid{r}" for r in (0, 1)]
    deadline = time.monotonic() + 180
    while not all(p.exists() and p.read_text() for p in pids):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached its pause"
        time.sleep(0.1)
    for pid in [int(p.read_text()) for p in pids] + [proc.pid]:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    return proc.wait(timeout=60)


@pytest.mark.slow
def test_a_ddp_run_writes_one_record_and_resumes_after_a_kill(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(_DRIVER))
    # the run to kill starts beside the whole one: it waits for the teacher the other
    # trains (the zoo's lock), then pauses after its first epoch, and is killed there
    whole = _torchrun(tmp_path, [str(driver), "-1", *_TRAIN, "--name", "whole"], tmp_path / "w")
    killed = _torchrun(tmp_path, [str(driver), "0", *_TRAIN, "--name", "cut"], tmp_path / "k")
    code, stdout, stderr = _finish(whole)
    assert code == 0, stderr[-3000:]
    assert "after 2 epochs over 2 processes" in stdout
    assert stdout.count("test accuracy") == 1  # rank 0 alone prints
    assert _kill_when_paused(killed, tmp_path / "k") == -signal.SIGKILL

    runs = tmp_path / "runs"
    records = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("record.json"))
    assert [r for r in records if not r.startswith("zoo/")] == [
        "cut/record.json",
        "whole/record.json",
    ]
    record = json.loads((runs / "whole" / "record.json").read_text())
    assert record["complete"] and record["world_size"] == 2 and len(record["history"]) == 2
    assert record["ddp"]["batch_per_rank"] == 16 and record["ddp"]["batch_norm"] == "per-rank"
    # AFD's adaptive weights come from the all-reduced epoch means: the same on every rank
    ranks = [json.loads((tmp_path / "w" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["weights"]["ce"] != 1.0
    assert _untimed(ranks[0]["history"]) == _untimed(ranks[1]["history"])
    cut = json.loads((runs / "cut" / "record.json").read_text())
    assert not cut["complete"] and len(cut["history"]) == 1

    code, _, stderr = _finish(
        _torchrun(tmp_path, ["-m", "atcourse", *_TRAIN, "--name", "cut"], tmp_path / "r")
    )
    assert code == 0, stderr[-3000:]
    a = torch.load(runs / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(runs / "cut" / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1 and a["world_size"] == b["world_size"] == 2
    assert a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["method"][key]), key
        else:  # AFD's weights, in the extra state
            assert value == b["method"][key], key
    assert _untimed(a["history"]) == _untimed(b["history"])
    # continued, not trained again: the first epoch's row is the killed run's own
    assert b["history"][0]["wall_time_s"] == cut["history"][0]["wall_time_s"]


def _untimed(history: list[dict]) -> list[dict]:
    """A history without its clock readings (each rank, each run times itself)."""
    clocks = ("images_per_s", "train_time_s", "wall_time_s")
    return [{k: v for k, v in row.items() if k not in clocks} for row in history]
