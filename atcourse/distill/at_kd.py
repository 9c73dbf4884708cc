"""AT+KD: activation-based attention transfer and Hinton KD together.

Zagoruyko & Komodakis (ICLR 2017), Table 1's "AT+KD" column: the student is trained with
the AT term of :class:`~atcourse.distill.attention.AT` and the soft-target term of
:class:`~atcourse.distill.kd.KD` at once, both read from one forward of the student and one
of the teacher.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from .attention import AT
from .base import DistillOutput
from .kd import KD, kd_loss
from .registry import register

__all__ = ["ATKD"]


@register("at+kd")
class ATKD(AT):
    """AT and Hinton KD together: ``(1 - alpha) * CE + alpha * kd_loss + w * sum_j at_loss_j``.

    The paper's "AT+KD" column: both terms at once, from the same student and teacher
    forwards. ``w`` is beta (code mode) or beta / 2 (paper mode), as in :class:`AT`;
    ``alpha`` and ``T`` as in :class:`~atcourse.distill.kd.KD` (alpha weighs the soft term).

    Loss terms: ``"ce"``, ``"kd"``, ``"at"`` (and the ``"at/<layer>"`` diagnostics).
    """

    name = "at+kd"
    knobs: ClassVar[dict[str, Param]] = {**KD.knobs, **AT.knobs}

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        alpha: float = 0.9,
        T: float = 4.0,
        **at_kwargs: Any,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if T <= 0:
            raise ValueError(f"temperature T must be positive, got {T}")
        super().__init__(student, teacher, **at_kwargs)
        self.alpha = float(alpha)
        self.T = float(T)

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        logits, student_feats = self._student_forward(images)
        teacher_logits, teacher_maps = self._teacher_targets(images, student_feats, True)
        at, diagnostics = self._at_term(student_feats, teacher_maps)
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "kd": kd_loss(logits, teacher_logits, self.T),
            "at": at,
        }
        weights = {"ce": 1.0 - self.alpha, "kd": self.alpha, "at": self.at_weight}
        return DistillOutput(logits, terms, weights, diagnostics)

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "T": self.T, **super().hparams()}
