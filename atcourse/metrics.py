"""What the course measures: accuracy, agreement with the teacher, attention alignment.

Attention alignment uses the ``shapes`` data set's object masks: the share of a map's
mass that falls on the object. A map spread evenly over the image scores the object's
area fraction (:func:`uniform_alignment`); a map entirely on the object scores 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import DeviceLoader
from .runtime import Precision, eval_mode, precision_for

__all__ = [
    "evaluate", "predict_all", "accuracy", "agreement", "mask_alignment", "uniform_alignment",
]  # fmt: skip

Predict = Callable[[Tensor], Tensor] | nn.Module


@torch.no_grad()
def evaluate(
    predict: Predict, loader: DeviceLoader, precision: Precision | None = None
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``predict`` (a model or ``method.predict``).

    One pass in eval mode (the mode is restored), under ``precision`` (default: the
    device's policy), counting on the device so nothing waits for the host per batch.

    Returns:
        ``{"acc": fraction in [0, 1], "loss": mean CE, "n": images}``.
    """
    module = predict if isinstance(predict, nn.Module) else getattr(predict, "__self__", None)
    precision = precision or precision_for(loader.device)
    correct = torch.zeros((), device=loader.device)
    loss_sum = torch.zeros((), device=loader.device)
    count = 0
    with eval_mode(module):
        for batch in loader:
            images, labels = batch[0], batch[1]
            with precision.autocast():
                logits = predict(images)
            logits = logits.float()
            correct += (logits.argmax(1) == labels).sum()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            count += labels.numel()
    n = max(count, 1)
    return {"acc": correct.item() / n, "loss": loss_sum.item() / n, "n": count}


@torch.no_grad()
def predict_all(predict: Predict, loader: DeviceLoader) -> tuple[Tensor, Tensor]:
    """Logits [N, K] (float32) and labels [N] of ``predict`` over a loader, in eval mode."""
    module = predict if isinstance(predict, nn.Module) else getattr(predict, "__self__", None)
    precision = precision_for(loader.device)
    logits, labels = [], []
    with eval_mode(module):
        for batch in loader:
            with precision.autocast():
                logits.append(predict(batch[0]).float())
            labels.append(batch[1])
    return torch.cat(logits), torch.cat(labels)


def accuracy(predict: Predict, loader: DeviceLoader) -> float:
    """Top-1 accuracy in [0, 1]."""
    return evaluate(predict, loader)["acc"]


def agreement(student: Predict, teacher: Predict, loader: DeviceLoader) -> float:
    """Share of images where the student's top-1 class equals the teacher's."""
    s_logits, _ = predict_all(student, loader)
    t_logits, _ = predict_all(teacher, loader)
    return (s_logits.argmax(1) == t_logits.argmax(1)).float().mean().item()


def _coverage(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Fraction of each map cell covered by the object: [B, H, W] bool -> [B, h, w]."""
    cov = masks.float().unsqueeze(1)
    if cov.shape[-2:] != size:
        cov = F.adaptive_avg_pool2d(cov, size)
    return cov.squeeze(1)


def mask_alignment(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of attention mass on the object, per image.

    Args:
        maps: non-negative attention maps [B, h, w] (any scale; e.g. ``attention_map``).
        masks: object masks [B, H, W] (bool); pooled to h x w as covered fractions.

    Returns:
        [B] values in [0, 1]: sum(map * coverage) / sum(map).
    """
    if maps.dim() != 3 or masks.dim() != 3 or maps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected maps [B,h,w] and masks [B,H,W], got {tuple(maps.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if (maps < 0).any():
        raise ValueError("attention maps must be non-negative (take |A|^p or a softmax first)")
    maps = maps.float()
    cov = _coverage(masks, maps.shape[-2:])
    return (maps * cov).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)


def uniform_alignment(masks: Tensor) -> Tensor:
    """What a map spread evenly over the image scores: the object's area fraction, [B]."""
    return masks.float().flatten(1).mean(1)
