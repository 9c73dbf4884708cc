"""The published numbers the course sets its runs beside, with their sources and caveats.

Notebook 07, ``atcourse results --anchors`` and ``docs/results.md`` read them. Each number
says whether it was checked against its source (``verified``); method names are the
course's registered names where the course has the method.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Anchor", "ANCHORS", "anchors", "anchors_markdown", "anchors_csv"]


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
        ("vit_l16_mae", "vit_l16"): {"baseline": 83.0, "finetune": 85.7,
                                     "attn_copy": 85.1, "attn_distill": 85.7},
    }, False, "ViT-L/16, teacher pre-trained with MAE; 'finetune' fine-tunes the teacher "
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
