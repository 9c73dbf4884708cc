"""The one training loop. Every notebook, the zoo and the command line train through it.

The loop knows nothing about distillation: it asks the method for a
:class:`~atcourse.distill.DistillOutput`, back-propagates ``out.total`` and logs each
loss term by name. What it does own:

- SGD with momentum and weight decay, the profile's learning-rate schedule (per step);
- the precision policy of :mod:`atcourse.runtime` (bf16 autocast on CUDA);
- progress bars (tqdm.auto) with live loss and accuracy;
- a per-epoch history: every loss term, train and test accuracy, images/s, wall time;
- a stop with a clear message when a loss becomes NaN or inf;
- an atomic checkpoint after every epoch (write, then rename) and resume from it;
- a run record under ``runs/`` (:mod:`atcourse.results`).

Loss values stay on the device during an epoch and are read once at its end, so the
hot path has no host synchronisation on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import paths, results
from .config import Config
from .data import DeviceLoader, ImageDataset
from .distill.base import Distiller, DistillOutput
from .runtime import Precision, eval_mode, precision_for, seed_everything, synchronize

__all__ = [
    "fit",
    "make_optimizer",
    "train_step",
    "evaluate",
    "TrainResult",
    "NonFiniteLossError",
    "lr_at",
    "atomic_save",
]

#: Parameters that change what training computes: a checkpoint resumes only if they match.
TRAIN_KEYS = (
    "dataset", "seed", "train_size", "epochs", "batch_size", "lr", "momentum",
    "weight_decay", "schedule", "milestones", "lr_decay", "warmup_epochs", "label_smoothing",
    "optimizer",
)  # fmt: skip


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

    ``sgd`` (also when unset): SGD with ``momentum``, weight decay on every parameter, the
    CNN recipes of the attention-transfer papers. ``adamw``: AdamW (betas 0.9, 0.999), the
    optimizer of every ViT recipe (DeiT, MAE fine-tuning, the ViT attention-transfer paper);
    as there, biases and normalization weights (1-D parameters) get no weight decay.
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


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact: the rename is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        import os

        os.fsync(fh.fileno())
    tmp.replace(path)


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    loader: DeviceLoader,
    precision: Precision | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``predict`` (a model or ``method.predict``).

    Returns ``{"acc": fraction in [0, 1], "loss": mean CE, "n": images}``.
    """
    module = predict if isinstance(predict, nn.Module) else getattr(predict, "__self__", None)
    precision = precision or precision_for(loader.device)
    correct = torch.zeros((), device=loader.device)
    loss_sum = torch.zeros((), device=loader.device)
    count = 0
    with eval_mode(module):
        for batch in loader:
            images, labels = batch[0], batch[1]
            with precision.autocast():
                logits = predict(images)
            logits = logits.float()
            correct += (logits.argmax(1) == labels).sum()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            count += labels.numel()
    return {
        "acc": correct.item() / max(count, 1),
        "loss": loss_sum.item() / max(count, 1),
        "n": count,
    }


def train_step(
    method: Distiller,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: float,
    sums: dict[str, torch.Tensor],
    correct: torch.Tensor,
) -> DistillOutput:
    """One optimisation step: the body of :func:`fit`'s loop (the benchmark times this).

    Sets the learning rate, runs the method's forward under the precision policy,
    back-propagates ``out.total`` and steps. Loss terms are added to ``sums`` and correct
    predictions to ``correct`` on the device, so nothing waits for the host.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with precision.autocast():
        out = method(images, labels)
    loss = out.total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for key, value in out.loss_terms.items():
            value = value.detach().float()
            sums[key] = sums[key] + value if key in sums else value.clone()
        sums.setdefault("total", torch.zeros((), device=images.device))
        sums["total"] += loss.detach().float()
        correct += (out.logits.detach().argmax(1) == labels).sum()
    return out


def _check_finite(sums: dict[str, torch.Tensor], epoch: int, step: int, steps: int) -> None:
    bad = [k for k, v in sums.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(
            f"loss term(s) {', '.join(bad)} became NaN/inf in epoch {epoch + 1}, by step "
            f"{step + 1}/{steps}. Usual causes: a learning rate too high for this method's "
            f"weight (lower lr or the term's weight), or bf16 overflow (try precision='fp32')."
        )


def _run_name(method: Distiller, cfg: Config) -> str:
    arch = getattr(method.student, "arch", type(method.student).__name__)
    return f"{method.name}-{arch}-{cfg['dataset']}-{cfg['profile']}-s{cfg['seed']}"


def fit(
    method: Distiller,
    cfg: Config,
    train_set: ImageDataset,
    test_set: ImageDataset | None = None,
    *,
    name: str | None = None,
    run_dir: str | Path | None = None,
    resume: bool | str = False,
    progress: bool = True,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
    record: bool = True,
) -> TrainResult:
    """Train ``method`` (its student and any parameters of its own) under ``cfg``.

    Args:
        method: a :class:`~atcourse.distill.Distiller`; :class:`~atcourse.distill.Baseline`
            for a model trained alone.
        cfg: the resolved configuration (:func:`atcourse.config.configure`); uses
            ``epochs, batch_size, lr, momentum, weight_decay, schedule, milestones,
            lr_decay, warmup_epochs, seed, device, precision`` and ``optimizer``
            (:func:`make_optimizer`).
        train_set, test_set: :class:`~atcourse.data.ImageDataset` (test may be None).
        name: the run's name (default: method-arch-dataset-profile-seed).
        run_dir: where checkpoint and record go (default ``runs/<name>``).
        resume: ``True``: continue from ``run_dir/checkpoint.pt`` when it exists (a
            finished run is returned as it is); its recipe, method, hyperparameters and
            teacher must match, else ValueError. ``"auto"``: the same when they match,
            a fresh run otherwise. ``False``: always a fresh run.
        progress: show a progress bar.
        callbacks: called as ``fn(epoch, row)`` after each epoch's checkpoint is written.
        record: write a run record (``record.json``) into the run folder. A recorded run
            holds the folder's lock (``.lock``) while it trains: a second process asking
            for the same run waits, then resumes or replaces it as ``resume`` says.

    Returns:
        :class:`TrainResult` with the per-epoch history and the final metrics.
    """
    if not isinstance(method, Distiller):
        raise TypeError(
            f"fit() trains a Distiller, not {type(method).__name__}; wrap a plain model as "
            f"atcourse.distill.Baseline(model)"
        )
    name = name or _run_name(method, cfg)
    run_dir = Path(run_dir) if run_dir is not None else results.run_dir(name)
    # One process per run folder: notebooks run in parallel (``atcourse run --jobs``) share
    # run names, and two processes writing one checkpoint would corrupt each other's runs.
    # The second waits, then resumes from (or, with resume=False, replaces) the first's run.
    lock = (
        paths.file_lock(run_dir / ".lock", waiting=f"waiting for run {name}: another process "
                        "is training it")
        if record else contextlib.nullcontext()
    )  # fmt: skip
    with lock:
        return _fit(method, cfg, train_set, test_set, name, run_dir, resume, progress,
                    callbacks, record)  # fmt: skip


def _fit(
    method: Distiller,
    cfg: Config,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    name: str,
    run_dir: Path,
    resume: bool | str,
    progress: bool,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]],
    record: bool,
) -> TrainResult:
    """The body of :func:`fit`, run while holding the run folder's lock."""
    from tqdm.auto import tqdm

    precision = precision_for(cfg["device"], cfg.get("precision") or "auto")
    device = precision.device
    seed_everything(cfg["seed"])

    method = precision.prepare(method)
    params = method.trainable_parameters()
    optimizer = make_optimizer(params, cfg)
    train_loader = DeviceLoader(
        train_set,
        cfg["batch_size"],
        train=True,
        device=device,
        seed=cfg["seed"],
        channels_last=precision.channels_last,
    )
    test_loader = (
        DeviceLoader(test_set, max(cfg["batch_size"], 256), train=False, device=device,
                     channels_last=precision.channels_last)
        if test_set is not None else None
    )  # fmt: skip
    steps = len(train_loader)
    if steps == 0:
        raise ValueError(
            f"the training set ({len(train_set)} images) is smaller than one batch "
            f"({cfg['batch_size']}): lower batch_size or raise train_size"
        )

    train_params = {k: cfg.get(k) for k in TRAIN_KEYS}
    if train_params["optimizer"] == "sgd":
        train_params["optimizer"] = None  # the default: checkpoints from before the option match
    # what is being trained matters as much as how: a checkpoint of another method, other
    # hyperparameters or another teacher must never be resumed as if it were this run
    teacher = getattr(method, "teacher", None)
    train_params.update(
        method=method.name,
        hparams=json.loads(json.dumps(method.hparams(), default=str)),
        student=getattr(method.student, "arch", type(method.student).__name__),
        teacher=getattr(teacher, "arch", type(teacher).__name__) if teacher is not None else None,
    )
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt_path = run_dir / "checkpoint.pt"
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        differ = {
            k: (state["train_params"].get(k), v)
            for k, v in train_params.items()
            if _normalise(state["train_params"].get(k)) != _normalise(v)
        }
        if differ and resume == "auto":
            state = None  # another run lived here: start afresh and overwrite it
        elif differ:
            raise ValueError(
                f"cannot resume {run_dir}: its checkpoint was trained with different "
                f"parameters {differ} (checkpoint, now). Use resume=False or another run_dir."
            )
    if state is not None:
        method.load_trainable_state(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        history = state["history"]
        start_epoch = state["epoch"] + 1
    elif record:
        run_dir.mkdir(parents=True, exist_ok=True)

    meta = results.run_meta(
        name, method, cfg, device=device, precision=precision.name, data=train_set.name
    )
    epochs = cfg["epochs"]
    check_every = 1 if device.type == "cpu" else 50
    bar = tqdm(
        total=epochs * steps,
        initial=start_epoch * steps,
        desc=name,
        disable=not progress,
        unit="step",
        leave=True,
        dynamic_ncols=True,
    )
    timer_kind = "cuda events" if device.type == "cuda" else "perf_counter"
    try:
        for epoch in range(start_epoch, epochs):
            method.train()
            train_loader.set_epoch(epoch)
            sums: dict[str, torch.Tensor] = {}
            correct = torch.zeros((), device=device)
            seen = 0
            synchronize(device)
            wall0 = time.perf_counter()
            if device.type == "cuda":
                ev0, ev1 = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                ev0.record()
            for step, (images, labels) in enumerate(train_loader):
                lr = lr_at(cfg, epoch + step / steps)
                out = train_step(method, optimizer, precision, images, labels, lr, sums, correct)
                seen += labels.numel()
                if step % check_every == 0 or step == steps - 1:
                    _check_finite(sums, epoch, step, steps)
                bar.update(1)
            if device.type == "cuda":
                ev1.record()
                ev1.synchronize()
                train_time = ev0.elapsed_time(ev1) / 1000.0
            else:
                train_time = time.perf_counter() - wall0
            row: dict[str, float] = {"epoch": epoch + 1, "lr": lr_at(cfg, epoch + 1 - 1e-9)}
            for key, value in sums.items():
                row[f"loss_{key}"] = value.item() / steps
            row["train_acc"] = correct.item() / seen
            row["images_per_s"] = seen / train_time
            row["train_time_s"] = train_time
            if test_loader is not None:
                metrics = evaluate(method.predict, test_loader, precision)
                row["test_acc"], row["test_loss"] = metrics["acc"], metrics["loss"]
                method.train()
            row["wall_time_s"] = time.perf_counter() - wall0
            row["weights"] = dict(out.weights)  # type: ignore[assignment]
            history.append(row)
            method.on_epoch_end(epoch, {k: v for k, v in row.items() if k.startswith("loss_")})
            state = {
                "epoch": epoch, "method": method.trainable_state(),
                "optimizer": optimizer.state_dict(), "history": history,
                "train_params": train_params, "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            }  # fmt: skip
            if record:
                atomic_save(state, ckpt_path)
                results.write_record(
                    run_dir, meta, history, complete=epoch + 1 == epochs, timer=timer_kind
                )
            postfix = {"loss": f"{row['loss_total']:.3f}", "train": f"{row['train_acc']:.1%}"}
            if "test_acc" in row:
                postfix["test"] = f"{row['test_acc']:.1%}"
            bar.set_postfix(postfix, refresh=True)
            for fn in callbacks:
                fn(epoch, row)
    finally:
        bar.close()

    final = results.final_metrics(history)
    return TrainResult(
        name=name, history=history, final=final, run_dir=run_dir if record else None, method=method
    )


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
