"""The one training loop. Every notebook, the zoo and the command line train through it.

The loop knows nothing about distillation: it asks the method for a
:class:`~atcourse.distill.DistillOutput`, back-propagates ``out.total`` and logs each
loss term and diagnostic by name. What it does own:

- the optimizer (SGD with momentum, or AdamW) and the profile's learning-rate schedule
  (set per step);
- the precision policy of :mod:`atcourse.runtime`;
- a per-epoch history: every loss term, its weight and every diagnostic, train
  accuracy, validation and test accuracy, images/s, wall time;
- a stop with a clear message when a loss term becomes NaN or inf;
- an atomic checkpoint after every epoch and resume from it, a run record under ``runs/``
  (:mod:`atcourse.records`), and a lock so that one process at a time trains a run;
- under torchrun, one run over all its processes (:mod:`atcourse.distributed`): the method
  in DistributedDataParallel, each rank on its share of every batch, loss terms, accuracy
  and evaluation combined over the ranks, files written by rank 0 alone.

Loss values stay on the device during an epoch and are read once at its end, so the
hot path has no host synchronisation on CUDA.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints, distributed, paths, records
from .checkpoints import CHECKPOINT, RunExistsError
from .config import Config
from .data import DeviceLoader, ImageDataset
from .distill.base import Distiller, DistillOutput
from .distill.teacher_cache import TeacherCache
from .metrics import evaluate
from .progress import progress_bar
from .runtime import Precision, precision_for, seed_everything, synchronize

__all__ = [
    "fit", "make_optimizer", "train_step", "TrainResult", "NonFiniteLossError", "lr_at",
    "RunExistsError", "CHECKPOINT", "EpochSums", "check_finite", "TEACHER_CACHE",
]  # fmt: skip

#: The teacher outputs of the runs this process trained, for the next student of the same
#: setting (:mod:`atcourse.distill.teacher_cache`); its budget is the run's
#: ``teacher_cache_mb``.
TEACHER_CACHE = TeacherCache(0)

EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the message says which, and when."""


@dataclass
class TrainResult:
    """What :func:`fit` returns: the history, the final metrics and where things went."""

    name: str
    history: list[dict[str, float]]
    final: dict[str, float]
    run_dir: Path | None
    method: Distiller = field(repr=False)

    @property
    def test_acc(self) -> float:
        return self.final["test_acc"]

    def series(self, key: str) -> list[float]:
        """One column of the history, e.g. ``result.series("test_acc")``."""
        return [row[key] for row in self.history if key in row]


def lr_at(cfg: Config | dict, epoch_progress: float) -> float:
    """Learning rate after ``epoch_progress`` epochs (a float: epoch + step/steps).

    ``step``: lr * lr_decay^(milestones passed), milestones as fractions of training
    (the AT paper's 60/120/160 of 200 epochs is (0.3, 0.6, 0.8), decay 0.2).
    ``cosine``: half a cosine from lr to 0. ``constant``: lr. A linear warm-up over
    ``warmup_epochs`` comes first in every schedule.
    """
    lr, epochs = cfg["lr"], cfg["epochs"]
    warm = cfg.get("warmup_epochs") or 0
    if warm and epoch_progress < warm:
        return lr * (epoch_progress + 1e-3) / warm
    frac = min(epoch_progress / epochs, 1.0)
    schedule = cfg["schedule"]
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * frac))
    if schedule == "step":
        # compare in whole epochs, as the reference recipes do
        epoch = int(epoch_progress + 1e-9)
        passed = sum(epoch >= round(m * epochs) for m in cfg["milestones"])
        return lr * cfg["lr_decay"] ** passed
    raise ValueError(f"unknown schedule {schedule!r}: choose step, cosine or constant")


def make_optimizer(params: Sequence[nn.Parameter], cfg: Config | dict) -> torch.optim.Optimizer:
    """The optimizer ``cfg["optimizer"]`` names, with ``cfg``'s learning rate and weight decay.

    ``sgd`` (also when unset): SGD with ``momentum`` (plain, not Nesterov), weight decay on
    every parameter, the CNN recipes of the attention-transfer papers. ``adamw``: AdamW
    (betas 0.9, 0.999), the optimizer of every ViT recipe (DeiT, MAE fine-tuning, the ViT
    attention-transfer paper); as there, biases and normalization weights (1-D parameters)
    get no weight decay.
    """
    name = cfg.get("optimizer") or "sgd"
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
        )
    if name == "adamw":
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups = [
            {"params": decay, "weight_decay": cfg["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg["lr"])
    raise ValueError(f"unknown optimizer {name!r}: choose sgd or adamw")


class EpochSums:
    """Per-epoch sums on the device: loss terms, diagnostics, correct predictions."""

    def __init__(self, device: torch.device):
        self.losses: dict[str, torch.Tensor] = {}
        self.diagnostics: dict[str, torch.Tensor] = {}
        self.reported: dict[str, int] = {}  # steps that reported each diagnostic
        self.correct = torch.zeros((), device=device)
        self.weights: dict[str, float] = {}

    @staticmethod
    def _add(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        sums[key] = sums[key] + value if key in sums else value.clone()

    def add(self, out: DistillOutput, loss: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.no_grad():
            for key, value in out.loss_terms.items():
                self._add(self.losses, key, value)
            self._add(self.losses, "total", loss)
            for key, value in out.diagnostics.items():
                self._add(self.diagnostics, key, value)
                self.reported[key] = self.reported.get(key, 0) + 1
            self.correct += (out.logits.detach().argmax(1) == labels).sum()
        self.weights = {k: float(out.weights.get(k, 1.0)) for k in out.loss_terms}

    def all_reduce(self) -> None:
        """Over processes: terms averaged (sums of means of equal shares), correct summed."""
        self.losses = distributed.all_reduce(self.losses, op="mean")
        self.diagnostics = distributed.all_reduce(self.diagnostics, op="mean")
        self.correct = distributed.all_reduce({"correct": self.correct})["correct"]


def train_step(
    method: Distiller | nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: float,
    sums: EpochSums | None = None,
) -> DistillOutput:
    """One optimisation step: the body of :func:`fit`'s loop (the benchmark times this).

    Sets the learning rate, runs the method's forward under the precision policy,
    back-propagates ``out.total`` and steps. ``method`` may be a distiller wrapped in
    DistributedDataParallel (:func:`atcourse.distributed.wrap`), whose backward averages the
    gradients over the processes. With ``sums``, loss terms, diagnostics and
    correct predictions are added to it on the device, so nothing waits for the host.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with precision.autocast():
        out = method(images, labels)
    loss = out.total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if sums is not None:
        sums.add(out, loss, labels)
    return out


def check_finite(sums: EpochSums, epoch: int, step: int, steps: int) -> None:
    """Stop the run (:class:`NonFiniteLossError`) when a summed loss term is NaN or inf.

    Over several processes the sums are added up first, so every rank stops together.
    """
    losses = distributed.all_reduce(sums.losses)
    bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(
            f"loss term(s) {', '.join(bad)} became NaN/inf in epoch {epoch + 1}, by step "
            f"{step + 1}/{steps}. Usual causes: a learning rate too high for this method's "
            f"weight (lower lr or the term's weight), or bf16 overflow (try precision='fp32')."
        )


# ----------------------------------------------------------------------------- run identity


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_setting(method: Distiller, train_set: ImageDataset, cfg: Config,
                   precision: Precision, loader: DeviceLoader) -> str:  # fmt: skip
    """What makes a frozen teacher's outputs on a run's batches the same from run to run:
    the teacher's weights, the training images and labels, the seed, the batch size, the
    augmentation and the precision. A key of all of them, so a stale output is never served."""
    teacher = method.teacher
    parts = [
        _digest(list(teacher.state_dict().values())),
        _digest([train_set.images, train_set.labels]),
        json.dumps([cfg["seed"], cfg["batch_size"], precision.name, precision.channels_last,
                    loader.augment, loader.pad, loader.flip]),
    ]  # fmt: skip
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


@contextlib.contextmanager
def _run_lock(folder: Path, name: str, enabled: bool) -> Iterator[None]:
    """One process per run folder; the second waits, then finds the first's run."""
    if not enabled:
        yield
        return
    waiting = f"waiting for run {name}: another process is training it"
    with paths.file_lock(folder / ".lock", waiting=waiting):
        yield


def fit(
    method: Distiller,
    cfg: Config,
    train_set: ImageDataset,
    test_set: ImageDataset | None = None,
    *,
    val_set: ImageDataset | None = None,
    label: str | None = None,
    name: str | None = None,
    run_dir: str | Path | None = None,
    resume: bool | str = "auto",
    replace: bool = False,
    progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
    record: bool = True,
    sync_bn: bool = False,
) -> TrainResult:
    """Train ``method`` (its student and any parameters of its own) under ``cfg``.

    Args:
        method: a :class:`~atcourse.distill.Distiller`; :class:`~atcourse.distill.Baseline`
            for a model trained alone.
        cfg: the resolved configuration (:func:`atcourse.config.configure`); uses the
            recipe (:data:`atcourse.config.RECIPE_KEYS`), ``seed``, ``device`` and
            ``precision``.
        train_set: the training split; val_set: evaluated after every epoch (``val_acc``
            in the history); test_set: evaluated once, after the last epoch (``test_acc`` in
            its row and the final metrics). Both optional. Choices are made on the
            validation split; the test split is for reported results.
        label: the run's row in tables (default: the method's name).
        name: the run's name (default: :func:`atcourse.records.run_name` of the label,
            student, task (the training set's name: the data set, or a class subset of it),
            profile and seed).
        run_dir: where checkpoint and record go (default ``runs/<name>``).
        resume: what to do with a run already in the folder. ``"auto"`` or ``True``:
            continue it from its checkpoint, or return it as it is when it has finished,
            if it was trained under the same setting (recipe, task, seed, method, its
            hyperparameters, student, teacher, precision); a run of another setting is
            refused (:class:`RunExistsError`). ``False``: refuse any run already there.
            Under ``"auto"`` an unreadable checkpoint starts the run afresh, with a warning.
        replace: train a new run over whatever the folder holds.
        progress: show a progress bar.
        callbacks: called as ``fn(epoch, row)`` after each epoch's checkpoint is written.
        record: write a checkpoint and a run record into the run folder, holding the
            folder's lock (``.lock``) while training: a second process asking for the same
            run waits, then returns (or continues) the first's.
        sync_bn: under torchrun, batch-norm statistics of the global batch (SyncBatchNorm,
            CUDA only) rather than of each rank's share (:func:`atcourse.distributed.wrap`).

    Under torchrun every process calls ``fit`` alike: ``batch_size`` stays the global batch,
    each rank trains on ``batch_size / world_size`` images of it in DistributedDataParallel,
    evaluation is sharded and combined, rank 0 alone locks and writes (the record states
    the world size), and every rank returns the same history.

    Returns:
        :class:`TrainResult` with the per-epoch history and the final metrics.
    """
    if not isinstance(method, Distiller):
        raise TypeError(
            f"fit() trains a Distiller, not {type(method).__name__}; wrap a plain model as "
            f"atcourse.distill.Baseline(model)"
        )
    label = label or method.name
    name = name or records.run_name(  # the task: the data set, or a class subset of it
        label, records.arch_name(method.student), train_set.name, cfg["profile"], cfg["seed"]
    )
    folder = Path(run_dir) if run_dir is not None else records.run_dir(name)
    distributed.init()  # joins torchrun's process group; nothing for a single process
    precision = precision_for(cfg["device"], cfg.get("precision") or "auto")
    setting = checkpoints.setting(method, cfg, precision, train_set.name)
    # Over several processes rank 0 reads the run folder and shares what it found (on the
    # CPU: each rank moves it to its own device), so every rank takes the same decision.
    load_to = precision.device if distributed.world_size() == 1 else torch.device("cpu")
    if (
        record
        and not replace
        and distributed.from_main(lambda: checkpoints.finished(folder, setting, resume))
    ):
        # returned without the lock, so a read-only runs folder serves its finished runs
        with contextlib.suppress(paths.CorruptFileError):  # handled below, under the lock
            state = distributed.from_main(lambda: checkpoints.load(folder / CHECKPOINT, load_to))
            return _returned(method, precision, state, name, folder)
    with _run_lock(folder, name, record and distributed.is_main()):
        existing = functools.partial(
            checkpoints.existing, folder, setting, load_to, resume, replace
        )
        state = distributed.from_main(existing) if record else None
        run = _Run(method, cfg, precision, train_set, {"val": val_set, "test": test_set},
                   sync_bn=sync_bn)  # fmt: skip
        if state is not None:
            run.restore(state)
            if state["epoch"] + 1 >= cfg["epochs"]:
                return _returned(method, precision, state, name, folder)
        meta = records.run_meta(
            name, method, cfg, label=label, task=train_set.name, device=precision.device,
            precision=precision.name, precision_reason=precision.reason, setting=setting,
            **distributed.describe(cfg["batch_size"], sync_bn),
        )  # fmt: skip
        run.train(name, progress, callbacks, folder if record else None, meta)
    return TrainResult(name, run.history, records.final_metrics(run.history),
                       folder if record else None, method)  # fmt: skip


def _returned(
    method: Distiller, precision: Precision, state: dict[str, Any], name: str, folder: Path
) -> TrainResult:
    """A finished run, returned as it is: its weights loaded into ``method``."""
    method = precision.prepare(method)
    method.load_trainable_state(state["method"])
    history = state["history"]
    return TrainResult(name, history, records.final_metrics(history), folder, method)


class _Run:
    """One training run's state: the method on its device, optimizer, loaders, history."""

    def __init__(
        self,
        method: Distiller,
        cfg: Config,
        precision: Precision,
        train_set: ImageDataset,
        eval_sets: dict[str, ImageDataset | None],
        sync_bn: bool = False,
    ):
        self.cfg, self.precision = cfg, precision
        device = precision.device
        seed_everything(cfg["seed"])
        self.method = precision.prepare(method)
        # what runs the training steps: the method itself, or under torchrun the method in
        # DistributedDataParallel (its trainable parts; the frozen teacher stays out)
        self.model = distributed.wrap(self.method, device, sync_bn=sync_bn)
        self.world = distributed.world_size()
        shard = {"rank": distributed.rank(), "world_size": self.world}
        self.optimizer = make_optimizer(self.method.trainable_parameters(), cfg)
        self.loader = DeviceLoader(
            train_set, cfg["batch_size"], train=True, device=device, seed=cfg["seed"],
            channels_last=precision.channels_last, **shard,
        )  # fmt: skip
        if len(self.loader) == 0:
            raise ValueError(
                f"the training set ({len(train_set)} images) is smaller than one batch "
                f"({cfg['batch_size']}): lower batch_size or raise train_size"
            )
        self.eval_loaders = {
            split: DeviceLoader(data, max(cfg["batch_size"], 256), train=False, device=device,
                                channels_last=precision.channels_last, **shard)
            for split, data in eval_sets.items() if data is not None
        }  # fmt: skip
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.compiled = bool(cfg.get("compile")) and not method.double_backward
        if self.compiled:
            self.method.student.compile()  # in place: state_dict keys stay as they are
        budget = cfg.get("teacher_cache_mb")
        budget = 1024 if budget is None else budget
        self.cache = None
        if method.teacher is not None and budget > 0:
            TEACHER_CACHE.max_bytes = budget * 2**20
            TEACHER_CACHE.start(_cache_setting(method, train_set, cfg, precision, self.loader))
            self.cache = TEACHER_CACHE

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, random state, history."""
        self.method.load_trainable_state(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        device = self.precision.device
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        if state.get("world_size", 1) != self.world:  # same batches, other BN statistics
            warnings.warn(f"resuming over {self.world} process(es) a run trained so far over "
                          f"{state.get('world_size', 1)}", stacklevel=3)  # fmt: skip

    def state(self, epoch: int) -> dict[str, Any]:
        device = self.precision.device
        return {
            "epoch": epoch, "method": self.method.trainable_state(),
            "optimizer": self.optimizer.state_dict(), "history": self.history,
            "train_params": self.meta["setting"], "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "world_size": self.world,
        }  # fmt: skip

    def train(
        self,
        name: str,
        progress: bool,
        callbacks: Sequence[EpochCallback],
        folder: Path | None,
        meta: dict[str, Any],
    ) -> None:
        """Epochs from the first not yet trained to the last, each checkpointed and recorded."""
        self.meta = meta
        epochs, steps = self.cfg["epochs"], len(self.loader)
        bar = progress_bar(total=epochs * steps, initial=self.start_epoch * steps, desc=name,
                           disable=not progress or not distributed.is_main(), unit="step",
                           leave=True, dynamic_ncols=True)  # fmt: skip
        timer = "cuda events" if self.precision.device.type == "cuda" else "perf_counter"
        self.method.teacher_cache = self.cache
        try:
            for epoch in range(self.start_epoch, epochs):
                row = self.train_epoch(epoch, bar)
                # per-rank batch-norm statistics have drifted apart in the last step: every
                # rank evaluates (and rank 0 saves) rank 0's
                distributed.broadcast_buffers(self.method, skip=("teacher",))
                for split, loader in self.eval_loaders.items():
                    if split == "test" and epoch + 1 < epochs:
                        continue  # the test split is read once, after the last epoch
                    scores = _evaluate(self.method, loader, self.precision)
                    row[f"{split}_acc"], row[f"{split}_loss"] = scores["acc"], scores["loss"]
                row["wall_time_s"] = time.perf_counter() - row.pop("_wall0")
                self.history.append(row)
                terms = {k[len("loss_") :]: v for k, v in row.items() if k.startswith("loss_")}
                self.method.on_epoch_end(epoch, terms)
                if folder is not None and distributed.is_main():
                    checkpoints.save(self.state(epoch), folder / CHECKPOINT)
                    records.write_record(folder, meta, self.history,
                                         complete=epoch + 1 == epochs, timer=timer)  # fmt: skip
                bar.set_postfix(_postfix(row), refresh=True)
                for fn in callbacks:
                    fn(epoch, row)
        finally:
            self.method.teacher_cache = None
            if self.cache is not None:
                self.cache.stop()
            bar.close()

    def train_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """One pass over the training set: the row of the history, without evaluation."""
        device, steps = self.precision.device, len(self.loader)
        check_every = 1 if device.type == "cpu" else 50
        self.method.train()
        self.loader.set_epoch(epoch)
        sums = EpochSums(device)
        seen = 0
        synchronize(device)
        wall0 = time.perf_counter()
        if device.type == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
        hits = self.cache.hits if self.cache is not None else 0
        for step, (images, labels) in enumerate(self.loader):
            lr = lr_at(self.cfg, epoch + step / steps)
            if self.cache is not None:
                self.cache.at(epoch, step)
            warming = self.compiled and epoch == self.start_epoch and step == 0
            if warming:
                bar.set_description(f"{bar.desc} (compiling the student: first steps are slow)")
            train_step(self.model, self.optimizer, self.precision, images, labels, lr, sums)
            if warming:
                bar.set_description(bar.desc.split(" (compiling")[0])
            seen += labels.numel()
            if step % check_every == 0 or step == steps - 1:
                check_finite(sums, epoch, step, steps)
            bar.update(1)
        if self.cache is not None:
            self.cache.stop()
        if device.type == "cuda":
            end.record()
            end.synchronize()
            train_time = start.elapsed_time(end) / 1000.0
        else:
            train_time = time.perf_counter() - wall0
        if self.world > 1:
            sums.all_reduce()
            seen *= self.world  # every rank took the same share of every batch
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr_at(self.cfg, epoch + 1 - 1e-9)}
        row.update({f"loss_{k}": v.item() / steps for k, v in sums.losses.items()})
        row.update({f"weight_{k}": w for k, w in sums.weights.items()})
        row.update({f"diag_{k}": v.item() / sums.reported[k] for k, v in sums.diagnostics.items()})
        if self.cache is not None:  # share of the steps whose teacher outputs were stored
            row["teacher_cached"] = (self.cache.hits - hits) / steps
        row["train_acc"] = sums.correct.item() / seen
        row["images_per_s"] = seen / train_time
        row["train_time_s"] = train_time
        row["_wall0"] = wall0
        return row


def _evaluate(method: Distiller, loader: DeviceLoader, precision: Precision) -> dict[str, float]:
    """:func:`~atcourse.metrics.evaluate` of the loader's share, combined over the ranks."""
    scores = evaluate(method.predict, loader, precision)
    means = {"acc": scores["acc"], "loss": scores["loss"]}
    return distributed.weighted_mean(means, scores["n"], precision.device)


def _postfix(row: dict[str, float]) -> dict[str, str]:
    shown = {"loss": f"{row['loss_total']:.3f}", "train": f"{row['train_acc']:.1%}"}
    for split in ("val", "test"):
        if f"{split}_acc" in row:
            shown[split] = f"{row[f'{split}_acc']:.1%}"
    return shown
