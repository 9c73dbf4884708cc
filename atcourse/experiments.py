"""The runs the course compares, and what trains the ones that are missing.

:data:`ENTRIES` lists the leaderboard's rows: a label, the registered method, its
hyperparameters, the teacher and the student. :func:`train_entry` loads or trains one
entry's run for a configuration (through :func:`atcourse.train.fit` under
:func:`atcourse.records.run_name`, or the zoo for the teacher and the student alone), so
the run a teaching notebook trained is the one the leaderboard reads. :func:`measure_attention`
adds where the trained network looks to its record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import models, paths, records, zoo
from .data import DeviceLoader, load_splits
from .distill import METHODS, build_method
from .distill.attention import attention_maps
from .metrics import map_auc, map_similarity, mask_alignment, pointing_game
from .models import forward_with_taps
from .models.vit_maps import cls_attention
from .runtime import eval_mode
from .train import fit

__all__ = [
    "Entry", "ENTRIES", "EntryRun", "PROFILE", "TEACHER", "student_arch", "teacher_arch",
    "train_entry", "measure_attention",
]  # fmt: skip


#: Architectures an entry takes from the profile (``cfg.student_arch``, ``cfg.teacher_arch``).
PROFILE = "profile"
#: An entry whose model is the profile's teacher (the "teacher" row).
TEACHER = "teacher"


@dataclass(frozen=True)
class Entry:
    """One row of the course's comparison.

    Attributes:
        label: the row's name, and the first part of its run name
            (:func:`atcourse.records.run_name`).
        method: a name registered in :data:`atcourse.distill.METHODS` (a variant, such as
            ``gradient_at_flip``, is a method of its own).
        hparams: keyword arguments of the method's constructor (None: its default); the
            same values the teaching notebook passes, so its finished run is reused.
        teacher: teacher architecture (from the zoo), :data:`PROFILE` for the profile's
            (``cfg.teacher_arch``), or None for a method without one.
        student: student architecture, :data:`PROFILE` for the profile's
            (``cfg.student_arch``), or :data:`TEACHER` for the profile's teacher.
        notebook: the notebook that teaches it (for notes and links).
        source: ``"fit"`` (trained by :func:`atcourse.train.fit`), ``"zoo.baseline"`` (the
            student alone) or ``"zoo.teacher"`` (the teacher).
    """

    label: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    teacher: str | None = PROFILE
    student: str = PROFILE
    notebook: str = ""
    source: str = "fit"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"entry {self.label!r}: unknown method {self.method!r}; choose one of "
                f"{', '.join(sorted(METHODS))}"
            )


_KD = {"alpha": 0.9, "T": 4.0}
_AT = {"beta": None, "p": 2.0, "mode": "code"}

#: The runs notebook 07 compares. One line per row: adding a method is adding its line.
#: The hyperparameters are the teaching notebooks' defaults.
ENTRIES: list[Entry] = [
    Entry("teacher", "baseline", teacher=None, student=TEACHER, notebook="00",
          source="zoo.teacher"),
    Entry("baseline", "baseline", teacher=None, notebook="00", source="zoo.baseline"),
    Entry("kd", "kd", _KD, notebook="01"),
    Entry("at", "at", _AT, notebook="02"),
    Entry("at+kd", "at+kd", {**_KD, **_AT}, notebook="02"),
    Entry("gradient_at", "gradient_at", {"beta": None}, notebook="03"),
    Entry("gradient_at_flip", "gradient_at_flip", {"beta": None}, teacher=None, notebook="03"),
    Entry("cat_kd", "cat_kd", notebook="04"),
    Entry("cat_kd_bin", "cat_kd_bin", notebook="04"),
    Entry("aft", "aft", notebook="05"),
]  # fmt: skip


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


def student_arch(entry: Entry, cfg: Any) -> str:
    """The entry's student architecture in ``cfg`` (the profile's where it says so)."""
    if entry.student == PROFILE:
        return cfg["student_arch"]
    return cfg["teacher_arch"] if entry.student == TEACHER else entry.student


def teacher_arch(entry: Entry, cfg: Any) -> str | None:
    """The entry's teacher architecture in ``cfg``, None for a method without one."""
    return cfg["teacher_arch"] if entry.teacher == PROFILE else entry.teacher


def _zoo_checkpoint(entry: Entry, cfg: Any) -> Path:
    """Where the zoo keeps a zoo entry's model (its run folder has the same name)."""
    if entry.source == "zoo.teacher":
        return zoo.teacher_path(student_arch(entry, cfg), cfg)
    return zoo.baseline_path(student_arch(entry, cfg), cfg)


def _restore_zoo_record(
    folder: Path, entry: Entry, model: torch.nn.Module, task: str, cfg: Any
) -> dict:
    """A run record rebuilt from a zoo checkpoint trained under another runs folder.

    The zoo's checkpoints are shared (``ATCOURSE_DATA``) while run records live in each
    runs folder, so a model can be cached with no record here. Its checkpoint carries the
    history, so the record is rebuilt from it; where it ran is unknown and said so.
    """
    info = getattr(model, "zoo_info", {})
    history = info.get("history") or []
    recipe = dict(info.get("recipe") or {})
    meta = {
        "name": folder.name, "label": entry.label, "task": task, "method": "baseline",
        "student": student_arch(entry, cfg), "teacher": None,
        "student_params": sum(p.numel() for p in model.parameters()), "params": recipe,
        "hparams": {"label_smoothing": recipe.get("label_smoothing") or 0.0},
        "device": "unknown", "device_name": "unknown", "threads": None, "machine": None,
        "precision": "unknown", "torch": torch.__version__,
        "code_version": records.code_version(), "restored_from": info.get("path"),
    }  # fmt: skip
    records.write_record(folder, meta, history, complete=bool(history))
    return records.read_record(folder) or {}


def _record_matches(entry: Entry, record: Mapping[str, Any], cfg: Any) -> bool:
    """Whether a record was trained as ``entry`` asks (for reading without training)."""
    if record.get("method") != entry.method or record.get("student") != student_arch(entry, cfg):
        return False
    hparams = record.get("hparams") or {}
    return all(v is None or hparams.get(k) == v for k, v in entry.hparams.items())


def train_entry(
    entry: Entry,
    cfg: Any,
    *,
    data: tuple[Any, ...] | None = None,
    teachers: dict[str, torch.nn.Module] | None = None,
    train: bool = True,
    progress: bool = True,
    alignment: bool = True,
) -> EntryRun | None:
    """Load one entry's run for ``cfg`` (profile, data set, seed, recipe), or train it.

    Training goes through :func:`atcourse.train.fit` with ``resume="auto"`` under
    :func:`atcourse.records.run_name`, so a finished run of the same setting (by any
    notebook) is reused and an interrupted one continues. The student is initialised from
    ``cfg.seed`` as the notebooks do. Zoo entries come from :func:`atcourse.zoo.teacher` /
    ``baseline``.

    Args:
        entry: the row to produce.
        cfg: a resolved configuration (:func:`atcourse.config.configure`).
        data: the splits already loaded (``load_splits(cfg)``: train, val, test).
        teachers: a cache of loaded teachers by architecture (filled as needed).
        train: False: only read what exists, train nothing (a zoo model cached in the
            data folder is loaded); a missing or different run gives None with a note.
        progress: progress bars.
        alignment: measure where the trained network looks on the test set's masks, and how
            like its teacher's (:func:`measure_attention`), and store it in the record.

    Returns:
        An :class:`EntryRun`, or None when ``train=False`` and no matching complete run
        exists.
    """
    arch = student_arch(entry, cfg)
    zoo_entry = entry.source in ("zoo.teacher", "zoo.baseline")
    if zoo_entry:
        folder = paths.runs_root() / "zoo" / _zoo_checkpoint(entry, cfg).stem
        name = folder.name
    else:
        name = records.run_name(entry.label, arch, cfg["dataset"], cfg["profile"], cfg["seed"])
        folder = records.run_dir(name)

    # a zoo model shipped, or cached by another runs folder, has no record here: loading it
    # trains nothing
    saved = _zoo_checkpoint(entry, cfg) if zoo_entry else None
    cached = (
        saved is not None
        and records.read_record(folder) is None
        and (saved.exists() or (zoo.SHIPPED / saved.name).exists())
    )
    if not train and not cached:
        record = records.read_record(folder)
        if record is None or not record.get("complete") or not _record_matches(entry, record, cfg):
            print(f"note: no finished run {name} for {entry.label!r} (train=False: skipped)")
            return None
        return EntryRun(entry, name, record, None, trained=False)

    data = data if data is not None else load_splits(cfg)
    train_set, test_set = data[0], data[-1]
    teachers = {} if teachers is None else teachers
    if zoo_entry:
        get = zoo.teacher if entry.source == "zoo.teacher" else zoo.baseline
        model = get(arch, cfg=cfg, data=data, progress=progress)
        if entry.source == "zoo.teacher":
            teachers.setdefault(arch, model)
        trained = not model.zoo_info.get("cached", True)
        record = records.read_record(folder) or _restore_zoo_record(
            folder, entry, model, train_set.name, cfg
        )
    else:
        teacher, t_arch = None, teacher_arch(entry, cfg)
        if t_arch is not None:
            if t_arch not in teachers:
                teachers[t_arch] = zoo.teacher(t_arch, cfg=cfg, data=data, progress=progress)
            teacher = teachers[t_arch]
        student = models.build(arch, num_classes=train_set.num_classes, seed=cfg["seed"])
        method = build_method(entry.method, student, teacher, **entry.hparams)
        before = records.read_record(folder, warn=False)
        val_set = data[1] if len(data) == 3 else None
        result = fit(method, cfg, train_set, test_set, val_set=val_set, label=entry.label,
                     name=name, resume="auto", progress=progress)  # fmt: skip
        model = result.method.student
        record = records.read_record(folder) or {}
        trained = before is None or before.get("updated") != record.get("updated")
    if alignment and record and "alignment_auc" not in record.get("final", {}):
        # maps are compared with the teacher's: the entry's, or the course's for the others
        ref = teacher_arch(entry, cfg) or cfg["teacher_arch"]
        if ref not in teachers:
            teachers[ref] = zoo.teacher(ref, cfg=cfg, data=data, progress=progress)
        scores = measure_attention(model, test_set, teacher=teachers[ref])
        if scores is not None:
            record = records.record_metrics(folder, **scores)
    model.eval()
    return EntryRun(entry, name, record, model, trained)


def _maps(model: torch.nn.Module, images: torch.Tensor, layer: str, vit: bool) -> torch.Tensor:
    """Where ``model`` looks at ``layer``: [B, h, w] (CLS attention for a ViT, averaged over
    heads; the activation attention map, p = 2, channel mean, for a CNN)."""
    if vit:
        _, taps = forward_with_taps(model, images, [layer])
        return cls_attention(taps[layer].float()).mean(1)
    return attention_maps(model, images, [layer], normalize=False)[layer]


def _read_point(model: torch.nn.Module) -> tuple[str, bool] | None:
    points = getattr(model, "tap_points", None) or {}
    if "attention_probs" in points:
        return points["attention_probs"][-1], True
    if "groups" in points:
        return points["groups"][-1], False
    return None


@torch.no_grad()
def measure_attention(
    model: torch.nn.Module,
    dataset: Any,
    *,
    teacher: torch.nn.Module | None = None,
    batch_size: int = 256,
) -> dict[str, Any] | None:
    """Where a network looks over a data set, scored against the objects' masks.

    Maps: for a CNN, the activation attention map (p = 2, channel mean) of its last
    ``"groups"`` tap point; for a ViT (a model that declares ``"attention_probs"``), its last
    block's attention of the CLS token to the patches, averaged over heads. Scores, means
    over the images (:mod:`atcourse.metrics`): ``alignment`` (share of the map's mass on
    the object), ``alignment_pointing`` (the map's maximum on the object),
    ``alignment_auc`` (ROC-AUC of the map as a detector of the object) and, with a
    ``teacher`` whose map is read the same way, ``alignment_teacher_similarity`` (the
    correlation of the two maps); ``alignment_layer`` names the layer.

    Returns:
        The scores, or None when the data set has no masks or the model declares no tap
        point to read.
    """
    if getattr(dataset, "masks", None) is None or _read_point(model) is None:
        return None
    layer, vit = _read_point(model)
    reference = _read_point(teacher) if teacher is not None else None
    device = next(model.parameters()).device
    sums = {"alignment": 0.0, "alignment_pointing": 0.0, "alignment_auc": 0.0}
    if reference is not None:
        sums["alignment_teacher_similarity"] = 0.0
    count = 0
    loader = DeviceLoader(dataset, batch_size, train=False, with_masks=True, device=device)
    with eval_mode(model), eval_mode(teacher):
        for images, _, masks in loader:
            maps = _maps(model, images, layer, vit)
            sums["alignment"] += mask_alignment(maps, masks).sum().item()
            sums["alignment_pointing"] += pointing_game(maps, masks).sum().item()
            sums["alignment_auc"] += map_auc(maps, masks).sum().item()
            if reference is not None:
                theirs = _maps(teacher, images.to(next(teacher.parameters()).device), *reference)
                similarity = map_similarity(maps, theirs.to(maps.device))
                sums["alignment_teacher_similarity"] += similarity.sum().item()
            count += images.shape[0]
    return {**{k: v / max(count, 1) for k, v in sums.items()}, "alignment_layer": layer}
