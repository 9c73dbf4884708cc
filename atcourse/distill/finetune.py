"""Fine-tuning: the usual way to use a pre-trained network, the reference row of notebook 06.

Li et al. (NeurIPS 2024) compare attention transfer with fine-tuning the pre-trained teacher
itself on the new task; this is that row, registered as a method so that it trains through
the same loop and is recorded like the others.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import Baseline, Distiller
from .registry import register

__all__ = ["FineTune"]


@register("finetune")
class FineTune(Distiller):
    """Fine-tuning, the usual way to use a pre-trained network: the paper's reference row.

    The student starts from the teacher's weights, except the classifier, which keeps its
    fresh initialisation (the new task's classes need not be the teacher's); then all of it
    is trained with cross-entropy. The teacher is held (frozen) only so the run records
    where the weights came from; it plays no part in the loss or at inference.

    Args:
        student: a freshly built network of the teacher's architecture; every weight but
            those under ``head_name`` is overwritten with the teacher's.
        teacher: the pre-trained network.
        head_name: the classifier's module name (``"head"`` in the built-in ViT).
        label_smoothing: as in :class:`~atcourse.distill.Baseline`.

    Loss terms: ``"ce"``.
    """

    name = "finetune"
    knobs = Baseline.knobs

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        head_name: str = "head",
        label_smoothing: float = 0.0,
    ):
        prefix = head_name + "."
        weights = {k: v for k, v in teacher.state_dict().items() if not k.startswith(prefix)}
        if len(weights) == len(teacher.state_dict()):
            raise ValueError(
                f"the teacher has no module {head_name!r} to leave out; pass the name of "
                "its classifier as head_name"
            )
        why = "fine-tuning needs a student of the teacher's architecture"
        try:
            missing, unexpected = student.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # shapes differ
            first = str(err).split("\n\t")[1:2] or [str(err)]
            raise ValueError(f"{why}: {first[0].strip()}") from None
        missing = [k for k in missing if not k.startswith(prefix)]
        if missing or unexpected:
            raise ValueError(f"{why}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        super().__init__(student, teacher)
        self.head_name = head_name
        self.label_smoothing = label_smoothing

    # Trained as the student alone is: only the starting weights differ.
    forward = Baseline.forward

    def hparams(self) -> dict[str, Any]:
        return {"head_name": self.head_name, "label_smoothing": self.label_smoothing}
