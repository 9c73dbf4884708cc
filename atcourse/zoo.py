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
from .config import RECIPE_KEYS, Config, configure, profile_defaults
from .data import ImageDataset, load_splits
from .data.shapes import SHAPES_VERSION, Difficulty
from .distill.base import Baseline, freeze
from .runtime import precision_for
from .train import fit

__all__ = [
    "teacher", "baseline", "checkpoint_path", "teacher_recipe", "teacher_path", "baseline_path",
    "ZOO_VERSION", "SHIPPED", "ship", "pretrain_config",
]  # fmt: skip

#: Bump when a change to the models or the loop makes old checkpoints wrong.
ZOO_VERSION = 2

#: The teachers that ship with the course, trained once by its own code, each with its
#: recipe and its history in a JSON file beside it.
SHIPPED = Path(__file__).resolve().parent / "teachers"

#: What a teacher's recipe takes from its profile when it is not the student's.
_PROFILE_KEYS = (*RECIPE_KEYS, "val_size", "test_size", "teacher_epochs")


def teacher_recipe(arch: str, cfg: Config) -> Config:
    """The recipe a teacher for ``cfg`` is trained with: its profile's (``teacher_profile``)
    where the student's profile filled a value in (values set by hand are kept), its own seed
    (``teacher_seed``), ``teacher_epochs`` epochs; the student's data set."""
    profile = cfg.get("teacher_profile") or cfg["profile"]
    recipe = cfg
    if profile != cfg["profile"]:  # what the student's profile filled in, the teacher's fills
        base = profile_defaults(profile)
        keep = {k: base[k] for k in _PROFILE_KEYS
                if k in base and k != "dataset" and cfg.source(k) == "profile"}  # fmt: skip
        recipe = cfg.replace(profile=profile, **keep)
    seed = cfg.get("teacher_seed")
    return recipe.replace(epochs=recipe["teacher_epochs"], arch=arch, seed=seed or 0)


def pretrain_config(cfg: Config) -> Config:
    """The configuration of a teacher pre-trained on more images than its student gets:
    ``pretrain_scale`` times its profile's ``train_size`` (all of a real data set when the
    profile takes all of it). Notebook 06's ViT teacher is resolved this way."""
    profile = cfg.get("teacher_profile") or cfg["profile"]
    base = profile_defaults(profile)["train_size"]
    size = None if base is None else int(cfg["pretrain_scale"] * base)
    return cfg.replace(train_size=size)


def teacher_path(arch: str, cfg: Config, classes: Sequence[int] | None = None) -> Path:
    """Where the zoo keeps (or will keep) the teacher ``arch`` for ``cfg``."""
    return checkpoint_path(arch, teacher_recipe(arch, cfg), role="teacher", classes=classes)


def baseline_path(arch: str, cfg: Config, classes: Sequence[int] | None = None) -> Path:
    """Where the zoo keeps the student ``arch`` trained alone for ``cfg`` (its own seed)."""
    recipe = cfg.replace(epochs=cfg["epochs"], arch=arch)
    return checkpoint_path(arch, recipe, role="baseline", classes=classes)


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
    recipe: Config,
    cfg: Config,
    *,
    role: str,
    data: tuple[ImageDataset, ...] | None,
    progress: bool,
    retrain: bool,
    classes: Sequence[int] | None = None,
) -> nn.Module:
    arch = recipe["arch"]
    path = checkpoint_path(arch, recipe, role=role, classes=classes)
    shipped = SHIPPED / path.name
    saved = _load(shipped) if shipped.exists() and not retrain else None  # no lock to read
    if saved is None:
        waiting = f"waiting for {path.name}: another process is training it"
        lock = paths.file_lock(path.with_suffix(".lock"), waiting=waiting)
        with lock if distributed.is_main() else contextlib.nullcontext():
            saved = distributed.from_main(
                lambda: _load(path) if path.exists() and not retrain else None
            )
            if saved is None:
                saved = _train(arch, recipe, role, path, data, progress, retrain, classes)
    model = models.build(arch, num_classes=saved["num_classes"])
    model.load_state_dict(saved["state_dict"])
    info = {k: saved[k] for k in ("history", "final", "recipe", "path") if k in saved}
    info["cached"] = not saved.get("trained_now", False)
    info["shipped"] = saved is not None and shipped.exists() and not retrain
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
) -> dict[str, Any]:
    """Train the model through the loop and save it; what was saved, marked trained now."""
    splits = data if data is not None else load_splits(recipe)
    train_set, test_set = splits[0], splits[-1]
    val_set = splits[1] if len(splits) == 3 else None
    if classes is not None:
        train_set, test_set = train_set.select_classes(classes), test_set.select_classes(classes)
        val_set = val_set.select_classes(classes) if val_set is not None else None
    model = models.build(arch, num_classes=train_set.num_classes, seed=recipe["seed"])
    method = Baseline(model, label_smoothing=recipe.get("label_smoothing") or 0.0)
    result = fit(
        method, recipe, train_set, test_set, val_set=val_set, label=role, name=path.stem,
        run_dir=paths.runs_root() / "zoo" / path.stem, resume="auto", replace=retrain,
        progress=progress,
    )  # fmt: skip
    state = {k: v.cpu() for k, v in result.method.student.state_dict().items()}
    payload = {
        "state_dict": state, "arch": arch, "num_classes": train_set.num_classes,
        "history": result.history, "final": result.final, "recipe": recipe.to_dict(),
        "path": str(path),
    }  # fmt: skip
    if distributed.is_main():
        paths.atomic_write(path, lambda fh: torch.save(payload, fh), digest=True)
    return {**payload, "trained_now": True}


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
    """A trained teacher: the shipped one, the cached one, or trained once and saved.

    Args:
        arch: a name from :func:`atcourse.models.available`.
        dataset, profile, seed: the setting (defaults: the profile's data set, ``lab``, and
            teacher seed 0); ignored where ``cfg`` is given.
        cfg: a resolved configuration; the teacher trains with :func:`teacher_recipe`
            (its profile's recipe for ``teacher_epochs`` epochs, seed ``teacher_seed``).
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
    cfg = _resolve(cfg, dataset, profile, None, teacher_seed=seed)
    recipe = teacher_recipe(arch, cfg)
    if recipe["profile"] != cfg["profile"]:
        data = None  # the splits given are the student's profile's, not the teacher's
    return _train_or_load(recipe, cfg, role="teacher", data=data, progress=progress,
                          retrain=retrain, classes=classes)  # fmt: skip


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
    recipe = cfg.replace(epochs=cfg["epochs"], arch=arch)
    return _train_or_load(recipe, cfg, role="baseline", data=data, progress=progress,
                          retrain=retrain, classes=classes)  # fmt: skip


def ship(model: nn.Module, command: str) -> Path:
    """Copy a zoo teacher's checkpoint (and its digest) into :data:`SHIPPED`, with a JSON file
    beside it: its recipe, history, final metrics and the ``command`` that trained it."""
    info = model.zoo_info
    source = Path(info["path"])
    SHIPPED.mkdir(exist_ok=True)
    target = SHIPPED / source.name
    paths.atomic_write(target, source.read_bytes(), digest=True)
    sidecar = {
        "file": target.name, "command": command, "recipe": info["recipe"],
        "classes": info["classes"], "final": info["final"], "history": info["history"],
    }  # fmt: skip
    paths.atomic_write(target.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return target


def _resolve(
    cfg: Config | None, dataset: str | None, profile: str | None, seed: int | None,
    teacher_seed: int | None = None,
) -> Config:  # fmt: skip
    if cfg is not None:
        return cfg
    given: dict[str, Any] = {"dataset": dataset, "seed": seed if seed is not None else 0,
                             "teacher_seed": teacher_seed}  # fmt: skip
    return configure(profile or "lab", verbose=False, **given)
