"""Teachers and baselines: load one, or train it once and save it.

A checkpoint's file name carries a hash of everything that changes its weights
(architecture, data set and size, the training recipe, the seed), so a different
recipe never loads a stale model. Training goes through :func:`atcourse.train.fit`
(with resume, so an interrupted teacher continues where it stopped), and a file lock
makes two processes asking for the same teacher at once train it only once. A cached
checkpoint that no longer matches the digest written with it is trained again, with a
warning. Under torchrun rank 0 takes the lock, reads the cache and shares what it found;
a teacher to train is trained by all the ranks together (one run of :func:`fit`) and
saved by rank 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, models, paths, records
from .config import RECIPE_KEYS, Config, configure
from .data import ImageDataset, load_splits
from .data.shapes import SHAPES_VERSION, Difficulty
from .distill.base import Baseline, freeze
from .runtime import precision_for
from .train import fit

__all__ = ["teacher", "baseline", "checkpoint_path", "ZOO_VERSION"]

#: Bump when a change to the models or the loop makes old checkpoints wrong.
ZOO_VERSION = 1


def checkpoint_path(
    arch: str, cfg: Config, *, role: str = "teacher", classes: Sequence[int] | None = None
) -> Path:
    """Where the zoo keeps (or will keep) this model: the name hashes the recipe.

    ``cfg`` is the model's own recipe (``epochs`` already the teacher's or the baseline's).
    ``classes`` (a model trained on some classes of the data set only) is part of the key
    and of the name (``...-c0_1_2_3_4-...``).
    """
    key = {k: cfg.get(k) for k in (*RECIPE_KEYS, "seed") if k != "optimizer"}
    key.update(arch=arch, version=ZOO_VERSION, role=role, data=_data_version(cfg))
    if cfg.get("optimizer") not in (None, "sgd"):  # SGD keys stay what they always were
        key["optimizer"] = cfg["optimizer"]
    subset = ""
    if classes is not None:
        key["classes"] = [int(c) for c in classes]
        subset = "-c" + "_".join(str(int(c)) for c in classes)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()
    return paths.checkpoint_root() / (
        f"{role}-{arch}-{records.safe_name(cfg['dataset'])}{subset}-"
        f"{cfg['profile']}-s{cfg['seed']}-{digest[:10]}.pt"
    )


def _data_version(cfg: Config) -> str:
    """What identifies the training images: for the generated set, its version and
    difficulty; for real data, the validation images held out of the stored train split."""
    if cfg["dataset"] == "shapes":
        return f"{SHAPES_VERSION}:{sorted(asdict(Difficulty()).items())}"
    return f"{cfg['dataset']}:val_size={cfg.get('val_size')}"


def _load(path: Path) -> dict[str, Any] | None:
    """A cached checkpoint, or None (with a warning naming it) when it is corrupt."""
    try:
        paths.verify_digest(path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except (paths.CorruptFileError, RuntimeError, EOFError, OSError) as exc:
        warnings.warn(f"zoo checkpoint {path} cannot be read ({exc}); training it again",
                      stacklevel=3)  # fmt: skip
        return None


def _train_or_load(
    arch: str,
    cfg: Config,
    *,
    role: str,
    epochs: int,
    data: tuple[ImageDataset, ...] | None,
    progress: bool,
    retrain: bool,
    classes: Sequence[int] | None = None,
) -> nn.Module:
    recipe = cfg.replace(epochs=epochs, arch=arch)
    path = checkpoint_path(arch, recipe, role=role, classes=classes)
    waiting = f"waiting for {path.name}: another process is training it"
    lock = paths.file_lock(path.with_suffix(".lock"), waiting=waiting)
    with lock if distributed.is_main() else contextlib.nullcontext():
        saved = distributed.from_main(
            lambda: _load(path) if path.exists() and not retrain else None
        )
        if saved is not None:
            model = models.build(arch, num_classes=saved["num_classes"])
            model.load_state_dict(saved["state_dict"])
            info = {k: saved[k] for k in ("history", "final", "recipe", "path") if k in saved}
            info["cached"] = True
        else:
            model, info = _train(arch, recipe, role, path, data, progress, retrain, classes)
            info["cached"] = False
    model = precision_for(cfg["device"], cfg.get("precision") or "auto").prepare(model)
    info["classes"] = None if classes is None else [int(c) for c in classes]
    model.zoo_info = info  # history and metrics, for plots and tables
    return freeze(model) if role == "teacher" else model


def _train(
    arch: str,
    recipe: Config,
    role: str,
    path: Path,
    data: tuple[ImageDataset, ...] | None,
    progress: bool,
    retrain: bool,
    classes: Sequence[int] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the model through the loop and save it; (model, info)."""
    train_set, *_, test_set = data if data is not None else load_splits(recipe)
    if classes is not None:
        train_set = train_set.select_classes(classes)
        test_set = test_set.select_classes(classes)
    model = models.build(arch, num_classes=train_set.num_classes, seed=recipe["seed"])
    method = Baseline(model, label_smoothing=recipe.get("label_smoothing") or 0.0)
    result = fit(
        method, recipe, train_set, test_set, label=role, name=path.stem,
        run_dir=paths.runs_root() / "zoo" / path.stem, resume="auto", replace=retrain,
        progress=progress,
    )  # fmt: skip
    model = result.method.student
    info = {
        "history": result.history,
        "final": result.final,
        "recipe": recipe.to_dict(),
        "path": str(path),
    }
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "arch": arch, "num_classes": train_set.num_classes, **info}
    if distributed.is_main():
        paths.atomic_write(path, lambda fh: torch.save(payload, fh), digest=True)
    return model, info


def teacher(
    arch: str = "wrn_16_2",
    dataset: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
    *,
    cfg: Config | None = None,
    data: tuple[ImageDataset, ...] | None = None,
    classes: Sequence[int] | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> nn.Module:
    """A trained teacher: loaded from ``data/checkpoints`` or trained once and saved.

    Args:
        arch: a name from :func:`atcourse.models.available`.
        dataset, profile, seed: the setting (defaults: the profile's data set, ``lab``, 0);
            ignored where ``cfg`` is given.
        cfg: a resolved configuration; the teacher trains for ``cfg.teacher_epochs``
            with the rest of ``cfg``'s recipe.
        data: the splits already loaded (``load_splits``' train, val, test), to avoid
            loading them twice (whole sets: ``classes`` is applied here).
        classes: train on these classes of the data set only, relabelled ``0..k-1`` in this
            order (:meth:`~atcourse.data.ImageDataset.select_classes`): a teacher
            pre-trained on another task than its student's. Part of the checkpoint key.
        progress: show the training progress bar.
        retrain: ignore a cached checkpoint.

    Returns:
        The teacher in eval mode with frozen parameters, with ``model.zoo_info`` holding
        its training history and final metrics.
    """
    cfg = _resolve(cfg, dataset, profile, seed)
    return _train_or_load(
        arch, cfg, role="teacher", epochs=cfg["teacher_epochs"], data=data, progress=progress,
        retrain=retrain, classes=classes,
    )  # fmt: skip


def baseline(
    arch: str,
    dataset: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
    *,
    cfg: Config | None = None,
    data: tuple[ImageDataset, ...] | None = None,
    classes: Sequence[int] | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> nn.Module:
    """A model trained alone for the student's budget (``cfg.epochs``), cached like a teacher.

    It is returned trainable (not frozen): it is the "student alone" row, and a starting
    point for fine-tuning. ``classes`` as in :func:`teacher`.
    """
    cfg = _resolve(cfg, dataset, profile, seed)
    return _train_or_load(
        arch, cfg, role="baseline", epochs=cfg["epochs"], data=data, progress=progress,
        retrain=retrain, classes=classes,
    )  # fmt: skip


def _resolve(
    cfg: Config | None, dataset: str | None, profile: str | None, seed: int | None
) -> Config:
    if cfg is not None:
        return cfg
    given: dict[str, Any] = {"dataset": dataset, "seed": seed if seed is not None else 0}
    return configure(profile or "lab", verbose=False, **given)
