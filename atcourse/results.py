"""Run records and the leaderboard.

Every training run writes ``runs/<name>/record.json`` (rewritten atomically after each
epoch): its parameters, the method's hyperparameters, the per-epoch history, final
metrics, the machine and the code version. :func:`leaderboard` gathers records into one
table with the mean and spread over seeds.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import paths

__all__ = [
    "run_dir", "run_meta", "write_record", "final_metrics", "load_records", "leaderboard",
    "to_markdown", "code_version",
]  # fmt: skip


def run_dir(name: str) -> Path:
    """The folder of a run: ``runs/<name>`` under :func:`atcourse.paths.runs_root`."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
    return paths.runs_root() / safe


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    from . import __version__

    root = paths.repo_root()
    if root is not None:
        try:
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return f"{__version__}+{sha}{'.dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return __version__


def run_meta(name: str, method: Any, cfg: Any, *, device: torch.device, precision: str) -> dict:
    """The parts of a record that do not change during a run."""
    student = getattr(method, "student", None)
    teacher = getattr(method, "teacher", None)
    n_params = sum(p.numel() for p in student.parameters()) if student is not None else None
    return {
        "name": name,
        "method": getattr(method, "name", type(method).__name__),
        "student": getattr(student, "arch", type(student).__name__),
        "teacher": getattr(teacher, "arch", type(teacher).__name__)
        if teacher is not None
        else None,
        "student_params": n_params,
        "params": cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg),
        "hparams": method.hparams() if hasattr(method, "hparams") else {},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision,
        "torch": torch.__version__,
        "code_version": code_version(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def final_metrics(history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Summary of a history: last and best test accuracy, total time, median images/s."""
    if not history:
        return {}
    last = history[-1]
    final: dict[str, float] = {"epochs": last["epoch"]}
    if "test_acc" in last:
        final["test_acc"] = last["test_acc"]
        final["best_test_acc"] = max(r["test_acc"] for r in history)
    final["train_acc"] = last["train_acc"]
    final["train_time_s"] = sum(r["train_time_s"] for r in history)
    final["wall_time_s"] = sum(r["wall_time_s"] for r in history)
    final["images_per_s"] = statistics.median(r["images_per_s"] for r in history)
    final["epoch_time_s"] = final["train_time_s"] / len(history)
    return final


def write_record(
    run_dir: Path,
    meta: dict,
    history: list[dict],
    *,
    complete: bool,
    timer: str = "",
    extra: dict | None = None,
) -> Path:
    """Write ``record.json`` atomically (temporary file, then rename)."""
    record = dict(meta)
    record["history"] = history
    record["final"] = final_metrics(history)
    record["complete"] = complete
    record["timer"] = timer
    record["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if extra:
        record.update(extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "record.json"
    tmp = path.with_name(".record.json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def load_records(root: str | Path | None = None, *, complete_only: bool = True) -> list[dict]:
    """Every ``record.json`` below ``root`` (default: the runs folder)."""
    root = Path(root) if root is not None else paths.runs_root()
    records = []
    for path in sorted(root.rglob("record.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if complete_only and not rec.get("complete"):
            continue
        rec["path"] = str(path)
        records.append(rec)
    return records


GROUP_KEYS = ("method", "dataset", "teacher", "student", "profile")


def leaderboard(
    records: Iterable[dict] | None = None, *, metric: str = "test_acc"
) -> list[dict[str, Any]]:
    """Mean and standard deviation of ``metric`` over seeds, per method and setting.

    Records are grouped by method, data set, teacher, student and profile. Each row has
    those keys plus ``n`` (seeds), ``mean``, ``std`` (sample std; 0 for one seed),
    ``seeds`` and ``epoch_time_s`` (mean).
    """
    records = load_records() if records is None else list(records)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        params = rec.get("params", {})
        key = (
            rec.get("method"),
            params.get("dataset"),
            rec.get("teacher"),
            rec.get("student"),
            params.get("profile"),
        )
        groups[key].append(rec)
    rows = []
    for key, recs in groups.items():
        values = [r["final"][metric] for r in recs if metric in r.get("final", {})]
        if not values:
            continue
        row = dict(zip(GROUP_KEYS, key))
        row["n"] = len(values)
        row["mean"] = statistics.fmean(values)
        row["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["seeds"] = sorted(r.get("params", {}).get("seed") for r in recs)
        times = [r["final"].get("epoch_time_s") for r in recs if r["final"].get("epoch_time_s")]
        row["epoch_time_s"] = statistics.fmean(times) if times else math.nan
        rows.append(row)
    rows.sort(key=lambda r: (str(r["dataset"]), str(r["student"]), -r["mean"]))
    return rows


def to_markdown(rows: Sequence[dict[str, Any]], *, percent: bool = True) -> str:
    """A leaderboard as a Markdown table."""
    head = "| method | dataset | teacher | student | profile | seeds | test acc | s/epoch |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        scale = 100.0 if percent else 1.0
        acc = f"{r['mean'] * scale:.2f} ± {r['std'] * scale:.2f}"
        lines.append(
            f"| {r['method']} | {r['dataset']} | {r['teacher'] or '-'} | {r['student']} | "
            f"{r['profile']} | {r['n']} | {acc} | {r['epoch_time_s']:.1f} |"
        )
    return "\n".join(lines)
