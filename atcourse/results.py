"""Run records, the compared runs, the leaderboard and the published numbers.

Every training run writes ``runs/<name>/record.json`` (rewritten atomically after each
epoch): its parameters, the method's hyperparameters, the per-epoch history, final
metrics, the machine and the code version. On top of the records:

- :data:`ENTRIES`, the runs the course compares, one per leaderboard row (a label, the
  registered method, its hyperparameters, teacher and student); :func:`run_name` is the
  one naming rule the notebooks and the leaderboard share; :func:`train_entry` loads or
  trains one entry's run for a configuration.
- :func:`leaderboard` groups records by *variant* (label, method, hyperparameters, data
  set, teacher, student, profile, recipe), never by method name alone, and gives the mean
  and the sample standard deviation over seeds; :func:`to_markdown` and :func:`to_csv`
  export it.
- :data:`ANCHORS`, the published numbers (sources and caveats included), with
  :func:`anchors_markdown` and :func:`anchors_csv`.
- :func:`render_section` and :func:`update_page`, which regenerate the tables of
  ``docs/results.md`` from the records (``atcourse results --page docs/results.md``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import statistics
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import paths

__all__ = [
    "run_dir", "run_meta", "task", "write_record", "final_metrics", "load_records",
    "record_metrics", "code_version", "machine_info",
    "Entry", "ENTRIES", "run_name", "run_label", "available_entries", "EntryRun",
    "train_entry", "measure_alignment",
    "leaderboard", "to_markdown", "to_csv",
    "Anchor", "ANCHORS", "anchors", "anchors_markdown", "anchors_csv",
    "describe_machines", "render_section", "update_page",
]  # fmt: skip


# --------------------------------------------------------------------------- records


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


def run_meta(
    name: str,
    method: Any,
    cfg: Any,
    *,
    device: torch.device,
    precision: str,
    data: str | None = None,
) -> dict:
    """The parts of a record that do not change during a run.

    ``data`` is the training set's name (``ImageDataset.name``): the configured data set, or
    a part of it such as ``"shapes[5,6,7,8,9]"`` (:func:`task`).
    """
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
        "data": data,
        "hparams": method.hparams() if hasattr(method, "hparams") else {},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
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
    record["updated"] = _now()
    if extra:
        record.update(extra)
    return _write_json(Path(run_dir) / "record.json", record)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, record: dict) -> Path:
    """Write JSON atomically: a unique temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=1, default=_json_default))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a record is meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


def record_metrics(run: str | Path, **metrics: Any) -> dict:
    """Add measurements made after training (e.g. ``alignment``) to a run's final metrics.

    ``run`` is a run name or a run folder. The record is rewritten atomically; a later
    epoch of the same run (a resumed run) recomputes ``final`` and drops them, which is
    right: they described the weights of the earlier epoch.
    """
    folder = Path(run) if isinstance(run, Path) or os.sep in str(run) else run_dir(str(run))
    path = folder / "record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileNotFoundError(f"no readable run record at {path} ({exc})") from exc
    record.setdefault("final", {}).update(metrics)
    _write_json(path, record)
    return record


# --------------------------------------------------------------------------- compared runs


def run_name(label: str, student_arch: str, dataset: str, profile: str, seed: int) -> str:
    """The name of a notebook's training run: ``{label}-{student}-{data}-{profile}-s{seed}``.

    The one naming rule: notebooks 01 to 07 and the leaderboard use it, so a run one
    notebook trained is found (and, with ``fit(..., resume="auto")``, reused) by the next.
    ``dataset`` is made safe for a folder name (``folder:/x/y`` -> ``folder__x_y``).

    >>> run_name("at+kd", "wrn_16_1", "shapes", "lab", 0)
    'at+kd-wrn_16_1-shapes-lab-s0'
    """
    data = dataset.replace(":", "_").replace("/", "_")
    return f"{label}-{student_arch}-{data}-{profile}-s{seed}"


@dataclass(frozen=True)
class Entry:
    """One row of the course's comparison.

    Attributes:
        label: the row's name, and the first part of its run name (:func:`run_name`);
            variants of one method (gradient AT with or without a teacher) have their own.
        method: a name registered in :data:`atcourse.distill.METHODS`.
        hparams: keyword arguments of the method's constructor (None: its default); the
            same values the teaching notebook passes, so its finished run is reused.
        teacher: teacher architecture (from the zoo), or None for a method without one.
        student: student architecture.
        notebook: the notebook that teaches it (for notes and links).
        source: ``"fit"`` (trained by :func:`atcourse.train.fit` under :func:`run_name`),
            ``"zoo.baseline"`` (the student alone) or ``"zoo.teacher"`` (the teacher).
    """

    label: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    teacher: str | None = "wrn_16_2"
    student: str = "wrn_16_1"
    notebook: str = ""
    source: str = "fit"


_KD = {"alpha": 0.9, "T": 4.0}
_AT = {"beta": None, "p": 2.0, "mode": "code"}

#: The runs notebook 07 compares. One line per row: adding a method is adding its line.
#: Entries whose method is not registered (a notebook not merged yet) are skipped with a
#: note. The hyperparameters are the teaching notebooks' defaults.
ENTRIES: list[Entry] = [
    Entry("teacher", "baseline", teacher=None, student="wrn_16_2", notebook="00",
          source="zoo.teacher"),
    Entry("baseline", "baseline", teacher=None, notebook="00", source="zoo.baseline"),
    Entry("kd", "kd", _KD, notebook="01"),
    Entry("at", "at", _AT, notebook="02"),
    Entry("at+kd", "at+kd", {**_KD, **_AT}, notebook="02"),
    Entry("gradient_at", "gradient_at", {"beta": None, "mode": "teacher"}, notebook="03"),
    Entry("gradient_at_flip", "gradient_at", {"beta": None, "mode": "flip"}, teacher=None,
          notebook="03"),
    Entry("cat_kd", "cat_kd", notebook="04"),
    Entry("cat_kd_bin", "cat_kd_bin", notebook="04"),
    Entry("aft", "aft", notebook="05"),
]  # fmt: skip


def available_entries(
    entries: Sequence[Entry] | None = None, *, verbose: bool = True
) -> list[Entry]:
    """The entries whose method is registered; a note for each one skipped."""
    from .distill import METHODS

    kept = []
    for entry in ENTRIES if entries is None else entries:
        if entry.method in METHODS:
            kept.append(entry)
        elif verbose:
            where = f" (notebook {entry.notebook})" if entry.notebook else ""
            print(
                f"note: skipping {entry.label!r}: method {entry.method!r}{where} is not "
                f"registered in this version of atcourse"
            )
    return kept


def task(record: Mapping[str, Any]) -> str:
    """What a run was trained on: its data set, with the class subset where it used one.

    ``"shapes"``, or ``"shapes[5,6,7,8,9]"`` for a run on five of its classes (notebook 06's
    transfer task): runs on different tasks are never compared in one leaderboard row.
    """
    dataset = str((record.get("params") or {}).get("dataset"))
    data = record.get("data") or ""
    return dataset + data[data.index("[") :] if "[" in data else dataset


def run_label(record: Mapping[str, Any]) -> str:
    """The label of a record's run: its name without the setting and seed suffix.

    Run names start with the label and the student's architecture:
    ``kd-wrn_16_1-shapes-lab-s0`` -> ``kd``; the zoo's
    ``teacher-wrn_16_2-shapes-lab-s0-<hash>`` -> ``teacher``; notebook 06's
    ``attn_copy-vitc_micro-shapes_c56789-lab-s0`` -> ``attn_copy``. A name that follows no
    rule loses only a trailing ``-s<seed>`` (and what follows it).
    """
    name = str(record.get("name") or Path(str(record.get("path", "x/x"))).parent.name)
    student = record.get("student")
    if student:  # run names start with "<label>-<student arch>-" (the zoo's too)
        at = name.find(f"-{student}-")
        if at > 0:
            return name[:at]
    match = re.match(r"(.+?)-s\d+(-.*)?$", name)
    return match.group(1) if match else name


@dataclass
class EntryRun:
    """One entry's run for one configuration: its record and the trained network."""

    entry: Entry
    name: str
    record: dict
    model: torch.nn.Module | None
    trained: bool  # trained now (False: an earlier run was reused)

    @property
    def final(self) -> dict[str, Any]:
        return self.record.get("final", {})


def _zoo_checkpoint(entry: Entry, cfg: Any) -> Path:
    """Where the zoo keeps a zoo entry's model (its run folder has the same name)."""
    from . import zoo

    role = "teacher" if entry.source == "zoo.teacher" else "baseline"
    epochs = cfg["teacher_epochs"] if role == "teacher" else cfg["epochs"]
    recipe = cfg.replace(epochs=epochs, arch=entry.student)
    return zoo.checkpoint_path(entry.student, recipe, role=role)


def _restore_zoo_record(folder: Path, entry: Entry, model: torch.nn.Module) -> dict:
    """A run record rebuilt from a zoo checkpoint trained under another runs folder.

    The zoo's checkpoints are shared (``ATCOURSE_DATA``) while run records live in each
    runs folder, so a model can be cached with no record here. Its checkpoint carries the
    history, so the record is rebuilt from it; where it ran is unknown and said so.
    """
    info = getattr(model, "zoo_info", {})
    history = info.get("history") or []
    recipe = dict(info.get("recipe") or {})
    meta = {
        "name": folder.name, "method": "baseline", "student": entry.student, "teacher": None,
        "student_params": sum(p.numel() for p in model.parameters()), "params": recipe,
        "hparams": {"label_smoothing": recipe.get("label_smoothing") or 0.0},
        "device": "unknown", "device_name": "unknown", "threads": None, "machine": None,
        "precision": "unknown", "torch": torch.__version__, "code_version": code_version(),
        "restored_from": info.get("path"),
    }  # fmt: skip
    write_record(folder, meta, history, complete=bool(history))
    return json.loads((folder / "record.json").read_text())


def _read_record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / "record.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    record["path"] = str(folder / "record.json")
    return record


def _record_matches(entry: Entry, record: Mapping[str, Any]) -> bool:
    """Whether a record was trained as ``entry`` asks (for reading without training)."""
    if record.get("method") != entry.method or record.get("student") != entry.student:
        return False
    hparams = record.get("hparams") or {}
    return all(v is None or hparams.get(k) == v for k, v in entry.hparams.items())


def train_entry(
    entry: Entry,
    cfg: Any,
    *,
    data: tuple[Any, Any] | None = None,
    teachers: dict[str, torch.nn.Module] | None = None,
    train: bool = True,
    progress: bool = True,
    alignment: bool = True,
) -> EntryRun | None:
    """Load one entry's run for ``cfg`` (profile, data set, seed, recipe), or train it.

    Training goes through :func:`atcourse.train.fit` with ``resume="auto"`` under
    :func:`run_name`, so a finished run of the same setting (by any notebook) is reused
    and an interrupted one continues. The student is initialised from ``cfg.seed`` as the
    notebooks do. Zoo entries come from :func:`atcourse.zoo.teacher` / ``baseline``.

    Args:
        entry: the row to produce.
        cfg: a resolved configuration (:func:`atcourse.config.configure`).
        data: (train, test) sets already loaded.
        teachers: a cache of loaded teachers by architecture (filled as needed).
        train: False: only read what exists, train nothing (a zoo model cached in the
            data folder is loaded); a missing or different run gives None with a note.
        progress: progress bars.
        alignment: measure the attention alignment of the trained network on the test
            set's masks (:func:`measure_alignment`) and store it in the record.

    Returns:
        An :class:`EntryRun`, or None when the entry's method is not registered or
        ``train=False`` and no matching complete run exists.
    """
    if not available_entries([entry]):
        return None
    from . import models, zoo
    from .data import load_splits
    from .distill import build_method
    from .runtime import seed_everything
    from .train import fit

    zoo_entry = entry.source in ("zoo.teacher", "zoo.baseline")
    if zoo_entry:
        folder = paths.runs_root() / "zoo" / _zoo_checkpoint(entry, cfg).stem
        name = folder.name
    else:
        name = run_name(entry.label, entry.student, cfg["dataset"], cfg["profile"], cfg["seed"])
        folder = run_dir(name)

    # a zoo model cached by another runs folder has no record here: loading it trains nothing
    cached = zoo_entry and _read_record(folder) is None and _zoo_checkpoint(entry, cfg).exists()
    if not train and not cached:
        record = _read_record(folder)
        if record is None or not record.get("complete") or not _record_matches(entry, record):
            print(f"note: no finished run {name} for {entry.label!r} (train=False: skipped)")
            return None
        return EntryRun(entry, name, record, None, trained=False)

    data = data if data is not None else load_splits(cfg)
    teachers = {} if teachers is None else teachers
    if zoo_entry:
        get = zoo.teacher if entry.source == "zoo.teacher" else zoo.baseline
        model = get(entry.student, cfg=cfg, data=data, progress=progress)
        if entry.source == "zoo.teacher":
            teachers.setdefault(entry.student, model)
        trained = not model.zoo_info.get("cached", True)
        record = _read_record(folder) or _restore_zoo_record(folder, entry, model)
    else:
        teacher = None
        if entry.teacher is not None:
            if entry.teacher not in teachers:
                teachers[entry.teacher] = zoo.teacher(
                    entry.teacher, cfg=cfg, data=data, progress=progress
                )
            teacher = teachers[entry.teacher]
        seed_everything(cfg["seed"])  # the notebooks' initialisation: reuse stays exact
        student = models.build(entry.student, num_classes=data[0].num_classes)
        method = build_method(entry.method, student, teacher, **entry.hparams)
        before = _read_record(folder)
        result = fit(method, cfg, data[0], data[1], name=name, resume="auto", progress=progress)
        model = result.method.student
        record = _read_record(folder) or {}
        trained = before is None or before.get("updated") != record.get("updated")
    if alignment and record and "alignment" not in record.get("final", {}):
        score = measure_alignment(model, data[1])
        if score is not None:
            record = record_metrics(folder, alignment=score[0], alignment_layer=score[1])
            record["path"] = str(folder / "record.json")
    model.eval()
    return EntryRun(entry, name, record, model, trained)


@torch.no_grad()
def measure_alignment(
    model: torch.nn.Module, dataset: Any, *, batch_size: int = 256
) -> tuple[float, str] | None:
    """Mean share of a network's attention that falls on the object, over a data set.

    - CNNs: the activation attention map (p = 2, channel mean) of the model's last
      ``"groups"`` tap point, scored by :func:`atcourse.metrics.mask_alignment`.
    - ViTs (models that declare ``"attention_probs"``): the last block's attention of the
      CLS token to the patches, averaged over heads, as a [grid, grid] map.

    Returns:
        (mean alignment in [0, 1], the layer it was read from), or None when the data set
        has no masks or the model declares no tap point to read.
    """
    from .data import DeviceLoader
    from .distill.attention import attention_alignment
    from .metrics import mask_alignment
    from .models import forward_with_taps
    from .runtime import eval_mode

    if getattr(dataset, "masks", None) is None:
        return None
    points = getattr(model, "tap_points", None) or {}
    if "attention_probs" in points:
        layer = points["attention_probs"][-1]
    elif "groups" in points:
        layer = points["groups"][-1]
    else:
        return None
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for images, _, masks in DeviceLoader(
            dataset, batch_size, train=False, with_masks=True, device=device
        ):
            if "attention_probs" in points:
                _, taps = forward_with_taps(model, images, [layer])
                probs = taps[layer].float()  # [B, heads, N, N], token 0 is CLS
                cls_to_patches = probs[:, :, 0, 1:].mean(1)  # [B, N-1]
                grid = math.isqrt(cls_to_patches.shape[1])
                maps = cls_to_patches.reshape(-1, grid, grid)
                scores = mask_alignment(maps, masks)
            else:
                scores = attention_alignment(model, images, masks, [layer])[layer]
            total += scores.sum().item()
            count += scores.numel()
    return total / max(count, 1), layer


# --------------------------------------------------------------------------- leaderboard

#: Parameters of the training recipe that separate leaderboard rows (the seed does not).
RECIPE_KEYS = (
    "train_size", "test_size", "epochs", "batch_size", "lr", "momentum", "weight_decay",
    "schedule", "milestones", "lr_decay", "warmup_epochs", "label_smoothing",
)  # fmt: skip

GROUP_KEYS = ("label", "method", "dataset", "teacher", "student", "profile")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _variant(rec: Mapping[str, Any]) -> tuple:
    params = rec.get("params") or {}
    recipe = {k: params.get(k) for k in RECIPE_KEYS}
    return (
        run_label(rec), rec.get("method"), task(rec), rec.get("teacher"),
        rec.get("student"), params.get("profile"), _canon(rec.get("hparams") or {}),
        _canon(recipe),
    )  # fmt: skip


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def leaderboard(
    records: Iterable[dict] | None = None, *, metric: str = "test_acc"
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of ``metric`` over seeds, one row per variant.

    A variant is a label (:func:`run_label`), method, hyperparameters, data set, teacher,
    student, profile and training recipe: gradient AT with a teacher and in flip mode, or
    one method at two values of beta, are separate rows even though the method name is
    the same. Where two rows would show the same label, the hyperparameters that tell them
    apart are added to it (``at (beta=100)``). Two records of one variant and one seed
    (the same run in two runs folders) count once: the later one.

    Each row: ``label, method, dataset, teacher, student, profile, hparams, n, seeds,
    mean, std`` (sample std, n - 1; 0 for one seed), ``epoch_time_s`` (mean seconds of
    training per epoch), ``alignment`` and ``alignment_std`` (None where not recorded),
    ``alignment_n``, ``metric`` and ``records`` (their paths). Sorted by profile, data
    set, then ``mean`` from best to worst.
    """
    records = load_records() if records is None else list(records)
    groups: dict[tuple, dict[Any, dict]] = defaultdict(dict)
    for rec in records:
        if metric not in (rec.get("final") or {}):
            continue
        seed = (rec.get("params") or {}).get("seed")
        kept = groups[_variant(rec)].get(seed)
        if kept is None or str(rec.get("updated", "")) >= str(kept.get("updated", "")):
            groups[_variant(rec)][seed] = rec
    rows = []
    for key, by_seed in groups.items():
        recs = [by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s))]
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key[:6]))
        row["hparams"] = json.loads(key[6])
        row["recipe"] = json.loads(key[7])
        values = [r["final"][metric] for r in recs]
        row["metric"] = metric
        row["n"] = len(values)
        row["seeds"] = [r.get("params", {}).get("seed") for r in recs]
        row["mean"], row["std"] = _mean_std(values)
        times = [r["final"]["epoch_time_s"] for r in recs if r["final"].get("epoch_time_s")]
        row["epoch_time_s"] = statistics.fmean(times) if times else math.nan
        aligned = [r["final"]["alignment"] for r in recs if "alignment" in r["final"]]
        row["alignment_n"] = len(aligned)
        row["alignment"], row["alignment_std"] = _mean_std(aligned) if aligned else (None, None)
        row["records"] = [r.get("path") for r in recs]
        rows.append(row)
    _disambiguate(rows)
    rows.sort(key=lambda r: (str(r["profile"]), str(r["dataset"]), -r["mean"], r["label"]))
    return rows


def _disambiguate(rows: list[dict[str, Any]]) -> None:
    """Append what tells apart rows that would otherwise show the same label."""
    clashes: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        clashes[tuple(row[k] for k in GROUP_KEYS)].append(row)
    for same in clashes.values():
        if len(same) < 2:
            continue
        settings = [{**r["recipe"], **r["hparams"]} for r in same]
        keys = sorted({k for s in settings for k in s})
        differ = [k for k in keys if len({_canon(s.get(k)) for s in settings}) > 1]
        for row, s in zip(same, settings):
            shown = ", ".join(f"{k}={_short(s.get(k))}" for k in differ)
            row["label"] = f"{row['label']} ({shown})"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def _pct(value: float | None, scale: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def to_markdown(rows: Sequence[dict[str, Any]], *, percent: bool = True) -> str:
    """A leaderboard as a Markdown table (accuracy and alignment in % unless ``percent``).

    Columns: run label, method, teacher -> student, data set, profile, seeds (n), test
    accuracy mean ± sample std, seconds of training per epoch, share of attention on the
    object (mean ± std over the seeds where it was measured).
    """
    scale = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    head = (
        f"| run | method | teacher → student | data | profile | seeds | test acc{unit} "
        f"| s/epoch | on object{unit} |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        acc = f"{_pct(r['mean'], scale)} ± {_pct(r['std'], scale)}"
        if r.get("alignment") is not None:
            align = f"{_pct(r['alignment'], scale, 1)} ± {_pct(r['alignment_std'], scale, 1)}"
        else:
            align = "-"
        pair = f"{r['teacher'] or '-'} → {r['student']}"
        secs = "-" if math.isnan(r["epoch_time_s"]) else f"{r['epoch_time_s']:.1f}"
        lines.append(
            f"| {r['label']} | {r['method']} | {pair} | {r['dataset']} | {r['profile']} | "
            f"{r['n']} | {acc} | {secs} | {align} |"
        )
    return "\n".join(lines)


CSV_COLUMNS = (
    "label", "method", "dataset", "teacher", "student", "profile", "hparams", "n", "seeds",
    "metric", "mean", "std", "epoch_time_s", "alignment", "alignment_std", "alignment_n",
)  # fmt: skip


def to_csv(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> str:
    """A leaderboard as CSV (fractions, not %; ``seeds`` joined by ';'), written if ``path``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = []
        for col in CSV_COLUMNS:
            v = r.get(col)
            if col == "hparams":
                v = _canon(v or {})
            elif col == "seeds":
                v = ";".join(str(s) for s in v)
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                v = ""
            values.append(v)
        writer.writerow(values)
    text = buffer.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------- published numbers


@dataclass(frozen=True)
class Anchor:
    """One published number.

    Attributes:
        source: the paper or benchmark (short citation).
        dataset: ``cifar10``, ``cifar100``, ``imagenet``.
        metric: ``"error"`` (test error, %) or ``"top1"`` (top-1 accuracy, %).
        teacher, student: architectures as the source names them (our names where we
            have the model: ``wrn_16_2``, ``resnet8x4``...); teacher None for a model
            trained alone.
        method: our method name where we have it (``baseline`` = student alone,
            ``teacher`` = the teacher itself, ``kd``, ``at``, ``at+kd``, ``cat_kd``), else
            the source's name.
        value: the number, in %.
        verified: True where the value was checked against the source or a copy of its
            table; False where it is quoted from memory of the paper (check before citing).
        note: how it was obtained (runs, recipe) and any caveat.
    """

    source: str
    dataset: str
    metric: str
    teacher: str | None
    student: str
    method: str
    value: float
    verified: bool
    note: str = ""

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in %, whatever the metric."""
        return 100.0 - self.value if self.metric == "error" else self.value


_AT_PAPER = "Zagoruyko & Komodakis, ICLR 2017, Table 1"
_AT_NOTE = "median of 5 runs; 200 epochs, SGD lr 0.1 x0.2 at 60/120/160, crops and flips"
_REPD = "Tian et al., ICLR 2020 (RepDistiller README)"
_REPD_NOTE = "240 epochs; the repository's benchmark table"
_CATKD = "Guo et al., CVPR 2023 (CAT-KD)"


def _at_rows() -> list[Anchor]:
    # (student, teacher, {method: (error %, verified)}); verified = confirmed from a
    # third-party copy of the table, the others are as the paper is commonly quoted.
    table = [
        ("wrn_16_1", "wrn_16_2", {"baseline": (8.77, True), "at": (7.93, True),
         "f_actt": (8.51, False), "kd": (7.41, False), "at+kd": (7.51, False),
         "teacher": (6.31, True)}),
        ("wrn_16_1", "wrn_40_1", {"baseline": (8.77, True), "at": (8.25, True),
         "f_actt": (8.62, False), "kd": (8.39, True), "at+kd": (8.01, False),
         "teacher": (6.58, True)}),
        ("wrn_16_2", "wrn_40_2", {"baseline": (6.31, True), "at": (5.85, True),
         "f_actt": (6.24, False), "kd": (6.08, True), "at+kd": (5.71, False),
         "teacher": (5.23, True)}),
    ]  # fmt: skip
    return [
        Anchor(_AT_PAPER, "cifar10", "error", teacher, student, method, value, ok, _AT_NOTE)
        for student, teacher, cells in table
        for method, (value, ok) in cells.items()
    ]


def _top1_rows(
    source: str, dataset: str, pairs: dict[tuple[str, str], dict[str, float]], ok: bool, note: str
) -> list[Anchor]:
    return [
        Anchor(source, dataset, "top1", teacher, student, method, value, ok, note)
        for (teacher, student), cells in pairs.items()
        for method, value in cells.items()
    ]


#: The published numbers notebook 07 and ``docs/results.md`` set our runs beside. Values
#: in %; ``verified`` says whether the value was checked against its source.
ANCHORS: list[Anchor] = [
    *_at_rows(),
    *_top1_rows(_REPD, "cifar100", {
        ("resnet32x4", "resnet8x4"): {"teacher": 79.42, "baseline": 72.50, "kd": 73.33,
                                      "at": 73.44},
        ("wrn_40_2", "wrn_16_2"): {"teacher": 75.61, "baseline": 73.26, "kd": 74.92,
                                   "at": 74.08},
        ("wrn_40_2", "wrn_40_1"): {"teacher": 75.61, "baseline": 71.98, "kd": 73.54,
                                   "at": 72.77},
        ("resnet56", "resnet20"): {"teacher": 72.34, "baseline": 69.06, "kd": 70.66,
                                   "at": 70.55},
        ("resnet110", "resnet32"): {"teacher": 74.31, "baseline": 71.14, "kd": 73.08,
                                    "at": 72.31},
        ("vgg13", "vgg8"): {"teacher": 74.64, "baseline": 70.36, "kd": 72.98, "at": 71.43},
        # different architecture families: where AT falls apart
        ("vgg13", "MobileNetV2"): {"teacher": 74.64, "baseline": 64.60, "kd": 67.37,
                                   "at": 59.40},
        ("resnet32x4", "ShuffleNetV1"): {"teacher": 79.42, "baseline": 70.50, "kd": 74.07,
                                         "at": 71.73},
    }, True, _REPD_NOTE),
    *_top1_rows(_CATKD, "cifar100", {
        ("resnet32x4", "resnet8x4"): {"cat_kd": 76.91},
        ("wrn_40_2", "wrn_16_2"): {"cat_kd": 75.60},
        ("wrn_40_2", "wrn_40_1"): {"cat_kd": 74.82},
        ("resnet56", "resnet20"): {"cat_kd": 71.62},
        ("resnet110", "resnet32"): {"cat_kd": 73.62},
        ("vgg13", "vgg8"): {"cat_kd": 74.65},
    }, False, "240 epochs, batch 64, lr 0.05; one public reproduction of resnet32x4 -> "
              "resnet8x4 got 75.01"),
    *_top1_rows(_CATKD, "imagenet", {
        ("resnet34", "resnet18"): {"teacher": 73.31, "baseline": 69.75, "at": 70.69,
                                   "kd": 71.03, "cat_kd": 71.26},
    }, False, "ImageNet-1K, the CAT-KD paper's comparison table"),
    *_top1_rows("Li et al., NeurIPS 2024 (attention transfer in ViTs)", "imagenet", {
        ("vit_l16_mae", "vit_l16"): {"baseline": 83.0, "fine-tune": 85.7,
                                     "attention_copy": 85.1, "attention_distillation": 85.7},
    }, False, "ViT-L/16, teacher pre-trained with MAE; 'fine-tune' fine-tunes the teacher "
              "itself, not a transfer"),
]  # fmt: skip


def anchors(
    *, dataset: str | None = None, source: str | None = None, student: str | None = None
) -> list[Anchor]:
    """The anchors matching every filter given (``source`` matches a substring)."""
    return [
        a
        for a in ANCHORS
        if (dataset is None or a.dataset == dataset)
        and (source is None or source.lower() in a.source.lower())
        and (student is None or a.student == student)
    ]


def anchors_markdown(items: Sequence[Anchor] | None = None) -> str:
    """Anchors as Markdown tables, one per source and data set, one row per pair.

    Unverified values carry a dagger (†): quoted as the paper is commonly cited, to be
    checked before citing.
    """
    items = ANCHORS if items is None else list(items)
    blocks: dict[tuple[str, str, str], list[Anchor]] = defaultdict(list)
    for a in items:
        blocks[(a.source, a.dataset, a.metric)].append(a)
    out = []
    for (source, dataset, metric), group in blocks.items():
        methods = list(dict.fromkeys(a.method for a in group))
        pairs = list(dict.fromkeys((a.teacher, a.student) for a in group))
        what = "test error %" if metric == "error" else "top-1 %"
        out.append(f"**{source}**, {dataset}, {what}. {group[0].note}.")
        out.append("")
        out.append("| teacher → student | " + " | ".join(methods) + " |")
        out.append("|" + "---|" * (len(methods) + 1))
        for teacher, student in pairs:
            cells = []
            for m in methods:
                hit = [
                    a for a in group if (a.teacher, a.student, a.method) == (teacher, student, m)
                ]
                cells.append(f"{hit[0].value:.2f}{'' if hit[0].verified else '†'}" if hit else "-")
            out.append(f"| {teacher} → {student} | " + " | ".join(cells) + " |")
        out.append("")
    if any(not a.verified for a in items):
        out.append("† not checked against the source here: verify before citing.")
    return "\n".join(out).rstrip() + "\n"


def anchors_csv(items: Sequence[Anchor] | None = None, path: str | Path | None = None) -> str:
    """Anchors as CSV, one value per line, written to ``path`` if given."""
    items = ANCHORS if items is None else list(items)
    cols = ("source", "dataset", "metric", "teacher", "student", "method", "value",
            "verified", "note")  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(cols)
    for a in items:
        writer.writerow([getattr(a, c) if getattr(a, c) is not None else "" for c in cols])
    text = buffer.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------- results page

_BEGIN = re.compile(r"<!-- atcourse:(leaderboard|anchors)([^>]*)-->")
_END = "<!-- atcourse:end -->"


def describe_machines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct machines records ran on, as text: device or CPU, threads, torch."""
    seen = []
    for rec in records:
        machine = rec.get("machine") or {}
        if rec.get("device_name") not in (None, "cpu", "unknown"):
            where = str(rec["device_name"])
        elif machine:
            where = f"{machine.get('cpu')}, {machine.get('cores')} cores"
        else:
            where = "unknown machine"
        threads = rec.get("threads")
        text = (
            f"{where}; {threads} thread{'s' if threads != 1 else ''}; torch {rec.get('torch')}"
            if threads
            else f"{where}; torch {rec.get('torch')}"
        )
        if text not in seen:
            seen.append(text)
    return seen


def render_section(
    records: Iterable[dict], *, profile: str, dataset: str, notebook: str = "07_leaderboard"
) -> str | None:
    """The Markdown of one measured leaderboard: table, command, machine, provenance.

    None when no complete record matches ``profile`` and ``dataset``.
    """
    from .config import PROFILES

    chosen = [
        r
        for r in records
        if (r.get("params") or {}).get("profile") == profile
        and (r.get("params") or {}).get("dataset") == dataset
    ]
    rows = leaderboard(chosen)
    if not rows:
        return None
    seeds = sorted({s for r in rows for s in r["seeds"] if s is not None})
    command = f"atcourse run {notebook} --profile {profile} --seeds {','.join(map(str, seeds))}"
    if PROFILES.get(profile, {}).get("dataset") != dataset:
        command += f" -p dataset={dataset}"
    versions = sorted({str(r.get("code_version")) for r in chosen if r.get("code_version")})
    dates = sorted(str(r.get("updated", ""))[:10] for r in chosen if r.get("updated")) or ["?"]
    lines = [
        to_markdown(rows),
        "",
        f"Reproduce: `{command}`, then `atcourse results --page docs/results.md`.",
        "",
        "Machine: " + " | ".join(describe_machines(chosen)) + ".",
        "",
        f"From {len(chosen)} run records ({dates[0]} to {dates[-1]}); code "
        f"{', '.join(versions) or 'unknown'}. Mean ± sample std over seeds; s/epoch is "
        f"training time only.",
    ]
    return "\n".join(lines)


def update_page(path: str | Path, records: Iterable[dict] | None = None) -> list[tuple[str, bool]]:
    """Regenerate the marked tables of a Markdown page in place (``docs/results.md``).

    A table sits between ``<!-- atcourse:leaderboard profile=lab dataset=shapes -->``
    (or ``<!-- atcourse:anchors -->``) and ``<!-- atcourse:end -->``. Leaderboard
    sections with no matching records are left as they are, so regenerating on a machine
    that has only some of the runs never erases the others.

    Returns:
        ``(marker, updated)`` per marked section.
    """
    path = Path(path)
    text = path.read_text()
    records = load_records() if records is None else list(records)
    report: list[tuple[str, bool]] = []
    out, pos = [], 0
    for match in _BEGIN.finditer(text):
        end = text.find(_END, match.end())
        if end < 0:
            raise ValueError(f"{path}: marker {match.group(0)!r} has no {_END!r} after it")
        if match.start() < pos:
            continue
        kind, args = match.group(1), dict(re.findall(r"(\w+)=(\S+)", match.group(2)))
        if kind == "anchors":
            body = anchors_markdown(anchors(dataset=args.get("dataset")))
        else:
            missing = {"profile", "dataset"} - set(args)
            if missing:
                raise ValueError(
                    f"{path}: {match.group(0)!r} needs {', '.join(sorted(missing))}=..."
                )
            body = render_section(records, profile=args["profile"], dataset=args["dataset"])
        out.append(text[pos : match.end()])
        if body is None:
            out.append(text[match.end() : end])
        else:
            out.append("\n" + body.rstrip() + "\n")
        report.append((match.group(0), body is not None))
        out.append(_END)
        pos = end + len(_END)
    out.append(text[pos:])
    path.write_text("".join(out))
    return report
