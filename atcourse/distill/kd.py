"""Hinton knowledge distillation: match the teacher's softened class probabilities.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015). The student
is trained on the hard labels and on the teacher's output distribution softened by a
temperature T > 1, which exposes how the teacher ranks the wrong classes ("dark
knowledge")::

    p_T = softmax(z_T / T),  p_S = softmax(z_S / T)
    L_KD = T^2 * KL(p_T || p_S) = T^2 * sum_k p_T[k] * (log p_T[k] - log p_S[k])
    L = (1 - alpha) * CE(z_S, y) + alpha * L_KD

The T^2 factor keeps the gradient of the soft term at the same scale whatever T is:
d L_KD / d z_S = T * (p_S - p_T), and for large T, p_S - p_T ~ (z_S - z_T) / (K T), so
the soft gradient without T^2 would shrink like 1 / T^2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from .base import Distiller, DistillOutput
from .registry import register

__all__ = ["kd_loss", "KD"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """Hinton's soft-target loss: T^2 * KL(p_T || p_S) of the T-softened distributions.

    Args:
        student_logits: [B, K] raw scores of the student (gradients flow into them).
        teacher_logits: [B, K] raw scores of the teacher (treated as constants).
        T: softmax temperature, > 0 (T = 4 on CIFAR).

    Returns:
        Scalar: KL summed over the K classes, averaged over the B samples, times T^2.
        Zero exactly when the two softened distributions are equal.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "expected student and teacher logits of the same shape [B, K], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if T <= 0:
        raise ValueError(f"temperature T must be positive, got {T}")
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=1)
    # "batchmean" sums over classes and divides by B only; "mean" would also divide by K.
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (T * T)


@register("kd")
class KD(Distiller):
    """Hinton KD: ``(1 - alpha) * CE + alpha * kd_loss`` (Hinton et al. 2015).

    Weights follow the attention-transfer repository's convention (and RepDistiller's on
    CIFAR): ``alpha`` weighs the soft term, ``1 - alpha`` the cross-entropy. torchdistill
    puts ``alpha`` on the cross-entropy term instead, so compare settings with care.

    Args:
        student: the network being trained, images [B, 3, H, W] -> logits [B, K].
        teacher: a trained network with the same K outputs; frozen here (eval, no grad).
        alpha: weight of the soft term, in [0, 1] (0.9 on CIFAR).
        T: softmax temperature (4 on CIFAR).

    Loss terms: ``"ce"`` (weight ``1 - alpha``) and ``"kd"`` (weight ``alpha``).
    """

    name = "kd"
    knobs: ClassVar[dict[str, Param]] = {
        "alpha": Param(float, "weight of the soft (KD) term; CE gets 1 - alpha", min=0.0, max=1.0),
        "T": Param(float, "softmax temperature of the KD term", min=1e-3),
    }

    def __init__(
        self, student: nn.Module, teacher: nn.Module, *, alpha: float = 0.9, T: float = 4.0
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if T <= 0:
            raise ValueError(f"temperature T must be positive, got {T}")
        super().__init__(student, teacher)
        self.alpha = float(alpha)
        self.T = float(T)

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images [B, 3, H, W], labels [B] -> student logits [B, K] and {"ce", "kd"}."""
        logits = self.student(images)
        teacher = self.teacher_outputs(["logits"], lambda: {"logits": self.teacher(images)})
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "kd": kd_loss(logits, teacher["logits"], self.T),
        }
        return DistillOutput(logits, terms, {"ce": 1.0 - self.alpha, "kd": self.alpha})

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "T": self.T}
