"""A run's checkpoint and its setting: what the weights depend on, and what to do with a run
that is already in a folder.

A run's *setting* is everything its weights depend on: the recipe
(:data:`atcourse.config.RECIPE_KEYS`), the task, the seed, the method and its
hyperparameters, the student, the teacher and the precision. A checkpoint is written after
every epoch, atomically and with its digest beside it (:func:`atcourse.paths.atomic_write`),
the previous epoch's kept; :func:`existing` decides, from what a folder holds, whether
:func:`atcourse.train.fit` continues a run, returns it, starts afresh or refuses.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from . import paths, records
from .config import RECIPE_KEYS, Config
from .runtime import Precision

__all__ = ["CHECKPOINT", "RunExistsError", "setting", "load", "save", "existing", "finished"]

#: The file name of a run's checkpoint, in its run folder.
CHECKPOINT = "checkpoint.pt"


class RunExistsError(ValueError):
    """A run folder holds another run, or a finished run that was not asked for."""


def setting(method: Any, cfg: Config, precision: Precision, task: str) -> dict[str, Any]:
    """What a run's weights depend on: a checkpoint resumes only under the same setting."""
    setting = {k: cfg.get(k) for k in (*RECIPE_KEYS, "seed")}
    setting["task"] = task
    if setting["optimizer"] == "sgd":
        setting["optimizer"] = None  # the default, however it was written
    teacher = getattr(method, "teacher", None)
    setting.update(
        method=method.name,
        hparams=json.loads(json.dumps(method.hparams(), default=str)),
        student=records.arch_name(method.student),
        teacher=records.arch_name(teacher),
        precision=precision.name,
    )
    return json.loads(json.dumps(setting, default=list))  # tuples as lists, as stored


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint, checked against the digest stored beside it; ValueError names the file."""
    try:
        paths.verify_digest(path)
        return torch.load(path, map_location=device, weights_only=False)
    except (paths.CorruptFileError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise paths.CorruptFileError(f"checkpoint {path} cannot be read ({exc})") from exc


def save(state: dict[str, Any], path: Path) -> None:
    """Keep the previous epoch's checkpoint, then write this one atomically with its digest."""
    if path.exists():
        path.replace(path.with_suffix(".prev.pt"))
        digest = paths.digest_path(path)
        if digest.exists():
            digest.replace(paths.digest_path(path.with_suffix(".prev.pt")))
    paths.atomic_write(path, lambda fh: torch.save(state, fh), digest=True)


def existing(
    folder: Path, setting: dict[str, Any], device: torch.device, resume: bool | str, replace: bool
) -> dict[str, Any] | None:
    """The checkpoint to continue from (or to return, when finished), or None for a new run.

    Raises RunExistsError for a run of another setting (or any run, with ``resume=False``)
    unless ``replace``; a checkpoint that cannot be read is reported with the way to recover.
    """
    path = folder / CHECKPOINT
    record = records.read_record(folder)
    if replace or (not path.exists() and record is None):
        return None
    state = None
    if path.exists():
        try:
            state = load(path, device)
        except paths.CorruptFileError as exc:
            prev = path.with_suffix(".prev.pt")
            fallback = None
            if prev.exists():
                with contextlib.suppress(paths.CorruptFileError):
                    fallback = load(prev, device)
            if fallback is not None and resume:
                warnings.warn(f"{exc}; resuming from the epoch before ({prev})", stacklevel=3)
                state = fallback
            elif resume == "auto":
                warnings.warn(f"{exc}; starting this run afresh", stacklevel=3)
                return None
            else:
                raise RunExistsError(
                    f"{exc}. Train it again with replace=True (atcourse train --replace), or "
                    f"delete {folder}"
                ) from exc
    saved = state["train_params"] if state is not None else (record or {}).get("setting") or {}
    differ = _differences(saved, setting)
    if differ:
        raise RunExistsError(
            f"cannot resume {folder}: its run was trained with different parameters {differ} "
            "(saved, now); resume (--resume) continues only a run of the same setting. Use "
            "replace=True (atcourse train --replace) to train over it, or another name "
            "(--name) or run_dir to keep both."
        )
    if not resume:
        done = "a finished" if record is not None and record.get("complete") else "an unfinished"
        raise RunExistsError(
            f"{folder} already holds {done} run of this setting: pass resume=True "
            "(atcourse train --resume) to continue or return it, or replace=True "
            "(atcourse train --replace) to train it again."
        )
    if state is None:
        warnings.warn(
            f"{folder} has a record but no checkpoint: training the run again", stacklevel=3
        )
    return state


def finished(folder: Path, setting: dict[str, Any], resume: bool | str) -> bool:
    """A finished run of the same setting, which can be returned without taking the lock."""
    record = records.read_record(folder, warn=False)
    return bool(
        resume
        and record is not None
        and record.get("complete")
        and (folder / CHECKPOINT).exists()
        and not _differences(record.get("setting") or {}, setting)
    )


# ----------------------------------------------------------------------------- the loop
