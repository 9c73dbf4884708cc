"""What the course measures: accuracy, agreement with the teacher, where a network looks.

Where a network looks is scored against the ``shapes`` data set's object masks, four ways:

- :func:`mask_alignment`: the share of a map's mass on the object. A flat map scores the
  object's area (:func:`uniform_alignment`), and the score grows with the map's sharpness
  as much as with its placement, so it separates little on its own.
- :func:`pointing_game`: whether the map's maximum lies on the object (Zhang et al., ECCV
  2016); a flat map scores the object's area, a map that peaks on it scores 1.
- :func:`map_auc`: the ROC-AUC of the map as a detector of the object's pixels, the
  probability that a random object pixel outranks a random background pixel; 0.5 for a
  flat or a random map whatever its sharpness, 1 for a map that ranks the object first.
- :func:`map_similarity`: the correlation of a map with another network's (the teacher's),
  position by position; 0 for a flat map.
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
    "pointing_game", "map_auc", "map_similarity",
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


def _check_maps(maps: Tensor, masks: Tensor) -> None:
    if maps.dim() != 3 or masks.dim() != 3 or maps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected maps [B,h,w] and masks [B,H,W], got {tuple(maps.shape)} "
            f"and {tuple(masks.shape)}"
        )


def _at_mask_size(maps: Tensor, masks: Tensor) -> Tensor:
    """Maps [B, h, w] spread over the masks' pixels [B, H, W] (each cell's value repeated)."""
    return F.interpolate(maps.float().unsqueeze(1), size=masks.shape[-2:], mode="nearest")[:, 0]


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Whether each map's maximum lies on the object: [B] in [0, 1].

    Where several positions share the maximum (a flat map), the score is the share of them
    on the object, so a flat map scores the object's area, as chance would.

    Args:
        maps: attention maps [B, h, w] (any scale); masks: object masks [B, H, W] (bool).
    """
    _check_maps(maps, masks)
    full = _at_mask_size(maps, masks).flatten(1)  # [B, H*W]
    top = full == full.amax(dim=1, keepdim=True)
    return (top & masks.flatten(1)).sum(1).float() / top.sum(1).float()


def map_auc(maps: Tensor, masks: Tensor) -> Tensor:
    """ROC-AUC of each map as a detector of its object's pixels: [B] in [0, 1].

    AUC = P(map at an object pixel > map at a background pixel) + 1/2 P(equal), computed
    from the ranks of the map's values (the Mann-Whitney U statistic). 0.5 for a flat map
    or one unrelated to the object, 1 when every object pixel outranks the background.
    An image whose mask is empty or full scores 0.5.
    """
    _check_maps(maps, masks)
    full = _at_mask_size(maps, masks).flatten(1).double()  # [B, N]
    positive = masks.flatten(1)
    scores = []
    for values, pos in zip(full, positive):
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            scores.append(0.5)
            continue
        order = values.argsort()
        ranks = torch.empty_like(values)
        ranks[order] = torch.arange(1, values.numel() + 1, dtype=values.dtype)
        # tied values share their average rank
        unique, inverse = values.unique(return_inverse=True)
        sums = torch.zeros_like(unique).index_add_(0, inverse, ranks)
        counts = torch.zeros_like(unique).index_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
        u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
        scores.append((u / (n_pos * n_neg)).item())
    return torch.tensor(scores)


def map_similarity(maps: Tensor, others: Tensor) -> Tensor:
    """Pearson correlation of each map with another's, position by position: [B] in [-1, 1].

    Maps of different sizes are compared at the smaller size (the larger average-pooled).
    A flat map (no variation) correlates 0 with anything.
    """
    if maps.dim() != 3 or others.dim() != 3 or maps.shape[0] != others.shape[0]:
        raise ValueError(f"expected two [B,h,w] maps, got {tuple(maps.shape)} and "
                         f"{tuple(others.shape)}")  # fmt: skip
    size = tuple(min(a, b) for a, b in zip(maps.shape[-2:], others.shape[-2:]))
    a = F.adaptive_avg_pool2d(maps.float().unsqueeze(1), size).flatten(1)
    b = F.adaptive_avg_pool2d(others.float().unsqueeze(1), size).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 1e-12, (a * b).sum(1) / denominator.clamp_min(1e-12), 0.0)
