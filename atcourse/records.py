"""Run records: the one naming rule, the run folders, and reading and writing ``record.json``.

Every training run writes ``runs/<name>/record.json`` (rewritten atomically after each
epoch): its label and task, its parameters, the method's hyperparameters, the per-epoch
history, the final metrics, the machine and the code version. The trainer writes records
(:mod:`atcourse.train`); the zoo, the compared entries and the leaderboard read them.

A run's name is ``{label}-{student}-{data}-{profile}-s{seed}`` (:func:`run_name`); the
record stores the label and the task it was trained on, so nothing is parsed back from a
name.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import paths

__all__ = [
    "run_name", "run_dir", "run_meta", "final_metrics", "write_record", "read_record",
    "load_records", "record_metrics", "code_version", "machine_info", "safe_name", "arch_name",
]  # fmt: skip


def safe_name(text: str) -> str:
    """``text`` made safe for a folder name (``folder:/x/y`` -> ``folder__x_y``)."""
    return "".join(c if c.isalnum() or c in "-_.=+[]," else "_" for c in text)


def run_name(label: str, student_arch: str, dataset: str, profile: str, seed: int) -> str:
    """The name of a training run: ``{label}-{student}-{data}-{profile}-s{seed}``.

    The one naming rule: the trainer's default name, the notebooks and the compared entries
    all use it, so a run one notebook trained is found (and, with
    ``fit(..., resume="auto")``, reused) by the next.

    >>> run_name("at+kd", "wrn_16_1", "shapes", "lab", 0)
    'at+kd-wrn_16_1-shapes-lab-s0'
    """
    return safe_name(f"{label}-{student_arch}-{dataset}-{profile}-s{seed}")


def run_dir(name: str) -> Path:
    """The folder of a run: ``runs/<name>`` under :func:`atcourse.paths.runs_root`."""
    return paths.runs_root() / safe_name(name)


def _package_version() -> str:
    try:
        return importlib.metadata.version("atcourse")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    __version__ = _package_version()
    root = paths.repo_root()
    if root is not None:
        try:
            git = ["git", "-C", str(root)]
            sha = subprocess.run(
                [*git, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5,
            ).stdout.strip()  # fmt: skip
            return f"{__version__}+{sha}{'.dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return __version__


def _cpu_model() -> str:
    """The processor's marketing name where the system says it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """What a results table says about the machine: CPU model, cores, OS, Python."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def arch_name(model: Any) -> str | None:
    """A model's architecture name (``model.arch``), its class name, or None for no model."""
    return None if model is None else getattr(model, "arch", type(model).__name__)


def run_meta(
    name: str,
    method: Any,
    cfg: Any,
    *,
    label: str,
    task: str,
    device: torch.device,
    precision: str,
    **extra: Any,
) -> dict[str, Any]:
    """The parts of a record that do not change during a run.

    Args:
        name: the run's name; label: its row in tables (e.g. ``"gradient_at_flip"``).
        method: the trained :class:`~atcourse.distill.Distiller`.
        cfg: the run's configuration (stored whole under ``params``).
        task: what it was trained on (the training set's name: ``"shapes"``, or
            ``"shapes[5,6,7,8,9]"`` for a class subset); runs on different tasks are never
            compared in one leaderboard row.
        device, precision: where and how it ran (``precision`` as the policy describes it).
        **extra: more fields (``precision_reason``, ``world_size``...).
    """
    student = getattr(method, "student", None)
    return {
        "name": name,
        "label": label,
        "task": task,
        "method": getattr(method, "name", type(method).__name__),
        "student": arch_name(student),
        "teacher": arch_name(getattr(method, "teacher", None)),
        "student_params": sum(p.numel() for p in student.parameters()) if student else None,
        "params": cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg),
        "hparams": method.hparams() if hasattr(method, "hparams") else {},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
        "precision": precision,
        "torch": torch.__version__,
        "code_version": code_version(),
        "started": _now(),
        **extra,
    }


def final_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Summary of a history: last and best accuracies, total time, median images/s."""
    if not history:
        return {}
    last = history[-1]
    final: dict[str, float] = {"epochs": last["epoch"]}
    for split in ("val", "test"):
        if f"{split}_acc" in last:
            final[f"{split}_acc"] = last[f"{split}_acc"]
            final[f"best_{split}_acc"] = max(r[f"{split}_acc"] for r in history
                                             if f"{split}_acc" in r)  # fmt: skip
    final["train_acc"] = last["train_acc"]
    final["train_time_s"] = sum(r["train_time_s"] for r in history)
    final["wall_time_s"] = sum(r["wall_time_s"] for r in history)
    final["images_per_s"] = statistics.median(r["images_per_s"] for r in history)
    final["epoch_time_s"] = final["train_time_s"] / len(history)
    return final


def write_record(
    folder: Path,
    meta: Mapping[str, Any],
    history: list[dict[str, Any]],
    *,
    complete: bool,
    timer: str = "",
) -> Path:
    """Write ``folder/record.json`` atomically: ``meta``, the history and its final metrics."""
    record = {
        **meta,
        "history": history,
        "final": final_metrics(history),
        "complete": complete,
        "timer": timer,
        "updated": _now(),
    }
    return _write_json(Path(folder) / "record.json", record)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, record: Mapping[str, Any]) -> Path:
    return paths.atomic_write(path, json.dumps(record, indent=1, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def read_record(folder: str | Path, *, warn: bool = True) -> dict[str, Any] | None:
    """The record of a run folder, with its ``path``; None when there is none.

    A record that exists but cannot be read (a truncated file, invalid JSON) gives None and
    a warning naming the file, so a broken run is never dropped from a table in silence.
    """
    path = Path(folder) / "record.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        if warn:
            warnings.warn(
                f"run record {path} cannot be read ({exc}); it is left out. Delete it, or "
                "retrain the run (its checkpoint, if any, resumes)",
                stacklevel=2,
            )
        return None
    if not isinstance(record, dict):
        if warn:
            warnings.warn(f"run record {path} is not a JSON object; it is left out", stacklevel=2)
        return None
    record["path"] = str(path)
    return record


def load_records(root: str | Path | None = None, *, complete_only: bool = True) -> list[dict]:
    """Every readable ``record.json`` below ``root`` (default: the runs folder)."""
    root = Path(root) if root is not None else paths.runs_root()
    records = []
    for path in sorted(root.rglob("record.json")):
        record = read_record(path.parent)
        if record is not None and (record.get("complete") or not complete_only):
            records.append(record)
    return records


def record_metrics(run: str | Path, **metrics: Any) -> dict[str, Any]:
    """Add measurements made after training (e.g. ``alignment``) to a run's final metrics.

    ``run`` is a run name or a run folder. The record is rewritten atomically; a later
    epoch of the same run (a resumed run) recomputes ``final`` and drops them, which is
    right: they described the weights of the earlier epoch.
    """
    folder = Path(run) if isinstance(run, Path) or os.sep in str(run) else run_dir(str(run))
    record = read_record(folder, warn=False)
    if record is None:
        raise FileNotFoundError(f"no readable run record at {folder / 'record.json'}")
    record.pop("path", None)
    record.setdefault("final", {}).update(metrics)
    _write_json(folder / "record.json", record)
    record["path"] = str(folder / "record.json")
    return record
