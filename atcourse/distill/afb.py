"""The attentional feature block (AFB) of AFD / AFT-KD, Eq. (1)-(3), on tensors.

Yang, Yu, Sheng, Yang, "Attention and feature transfer based knowledge distillation",
Scientific Reports 13:18369, 2023. From the pre-activation features PreF of a network's last
stage (before the final ReLU)::

    CAM = Binary(Conv1x1(PreF))                 the "process" part, a spatial mask   (1)
    AFB = CAM + ReLU(PreF)                      the "outcome" part added to it       (2)
    L_AFD = || align(AFB_S) - align(AFB_T) ||^2 (mean squared error)                 (3)

The method that trains with it is :class:`atcourse.distill.aft.AFTKD`. The paper leaves the
binarization, the gradient through it, the merge and the alignment open; each is a named
choice here (the constants below list them). The equation numbers are this package's and
notebook 05's labels, not the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import at_least_fp32
from .cam import binarize_cams, class_activation_maps

__all__ = [
    "binary_mask",
    "class_maps",
    "attentional_feature_block",
    "align_features",
    "afb_loss",
    "check_choice",
    "merge_mask",
    "pool_to",
    "THRESHOLDS",
    "GRADIENTS",
    "MERGES",
    "ALIGNS",
]

#: Binarization thresholds, per map: above mean |CAM| (``binarize_cams``), above the
#: map's mean, or above zero (positive class evidence).
THRESHOLDS = ("mean_abs", "mean", "zero")
#: How gradients pass the binarization: not at all, or straight through (identity).
GRADIENTS = ("none", "ste")
#: How the one-channel mask meets the C feature channels: added to each, or stacked.
MERGES = ("add", "concat")
#: How teacher and student features of different width are brought together.
ALIGNS = ("conv", "pool")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


# --------------------------------------------------------------------------- the block


def binary_mask(cams: Tensor, threshold: str = "mean_abs", gradient: str = "none") -> Tensor:
    """Binary(.) of Eq. (1): 1 where a map exceeds its threshold, else 0.

    Args:
        cams: maps [..., H, W] (e.g. one class map per image, [B, 1, H, W]).
        threshold: per map, over its H x W positions: ``"mean_abs"`` (above mean |CAM|,
            :func:`~atcourse.distill.cam.binarize_cams`, CAT-KD's binarized variant),
            ``"mean"`` (above the map's own mean) or ``"zero"`` (positive evidence only).
        gradient: ``"none"``: the step has zero gradient almost everywhere, so the mask is
            a constant (detached); ``"ste"``: the clipped straight-through estimator
            (Bengio, Leonard, Courville 2013; clipped as in Hubara et al. 2016, binarized
            networks): the forward value is the binary mask, and the backward pass treats
            the step as the identity within one unit of the threshold,
            d mask / d cams = 1 where |cams - threshold| <= 1, and as flat beyond.

    The clipping matters. With the plain identity, a position far on one side of the
    threshold keeps receiving a gradient although moving it cannot change the mask, so
    the map (and the 1x1 convolution behind it) drifts without bound: wrn_16_1 learning
    from wrn_16_2 on ``shapes`` (``lab`` profile) diverged to NaN in its second epoch.

    Returns:
        A float tensor of zeros and ones, the shape and dtype of ``cams``.
    """
    check_choice("threshold", threshold, THRESHOLDS)
    check_choice("gradient", gradient, GRADIENTS)
    if cams.dim() < 2:
        raise ValueError(f"expected maps [..., H, W], got shape {tuple(cams.shape)}")
    values = cams.detach()
    if threshold == "mean_abs":
        hard = binarize_cams(cams)
        level = values.abs().mean(dim=(-2, -1), keepdim=True)  # binarize_cams' threshold
    else:
        level = values.mean(dim=(-2, -1), keepdim=True) if threshold == "mean" else 0.0
        hard = (values > level).to(cams.dtype)
    if gradient == "ste":
        window = ((values - level).abs() <= 1).to(cams.dtype)
        # forward: exactly ``hard`` (x - x is 0); backward: ``window`` into ``cams``
        return hard + (cams - cams.detach()) * window
    return hard


def class_maps(cams: Tensor, classes: Tensor) -> Tensor:
    """One map per image: ``cams[b, classes[b]]``, [B, K, H, W], [B] -> [B, 1, H, W]."""
    if cams.dim() != 4 or classes.shape != cams.shape[:1]:
        raise ValueError(
            f"expected cams [B, K, H, W] and classes [B], got {tuple(cams.shape)} and "
            f"{tuple(classes.shape)}"
        )
    index = classes.long().view(-1, 1, 1, 1).expand(-1, 1, *cams.shape[-2:])
    return cams.gather(1, index)  # [B, 1, H, W]


def attentional_feature_block(
    preact: Tensor,
    cam_weight: Tensor,
    classes: Tensor,
    *,
    threshold: str = "mean_abs",
    gradient: str = "none",
    merge: str = "add",
) -> Tensor:
    """The attentional feature block, Eq. (1)-(2): ``Binary(Conv1x1(PreF)) + ReLU(PreF)``.

    Conv1x1 with weights ``cam_weight`` [K, C] maps PreF to K class activation maps
    (:func:`~atcourse.distill.cam.class_activation_maps`); the map of each image's class
    ``classes[b]`` is binarized (:func:`binary_mask`) into a one-channel mask [B, 1, H, W]
    and merged with the C channels of ReLU(PreF).

    Args:
        preact: pre-activation features PreF [B, C, H, W] (for post-activation features
            ReLU is the identity and the CAM is Zhou et al.'s).
        cam_weight: the 1x1 convolution's weights, [K, C] (or [K, C, 1, 1]).
        classes: the class whose map becomes the mask, [B] (int).
        threshold, gradient: as in :func:`binary_mask`.
        merge: ``"add"``: the mask is added to every channel (Eq. (2)'s "+", broadcast over
            C), [B, C, H, W]; ``"concat"``: it is stacked as one more channel, [B, C+1, H, W].

    Returns:
        The AFB, [B, C, H, W] (``"add"``) or [B, C + 1, H, W] (``"concat"``).
    """
    check_choice("merge", merge, MERGES)
    mask = binary_mask(class_maps(class_activation_maps(preact, cam_weight), classes),
                       threshold, gradient)  # fmt: skip
    return merge_mask(F.relu(preact), mask, merge)


def merge_mask(features: Tensor, mask: Tensor, merge: str) -> Tensor:
    if merge == "add":
        return features + mask  # [B, C, H, W] + [B, 1, H, W], broadcast over channels
    return torch.cat([features, mask], dim=1)  # [B, C + 1, H, W]


def _pool_channels(x: Tensor, channels: int) -> Tensor:
    """Average adjacent channels in blocks: [B, C, H, W] -> [B, channels, H, W]."""
    if x.shape[1] == channels:
        return x
    b, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, H*W, C]
    pooled = F.adaptive_avg_pool1d(flat, channels)  # [B, H*W, channels]
    return pooled.reshape(b, h, w, channels).permute(0, 3, 1, 2)


def pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if x.shape[-2:] == size else F.adaptive_avg_pool2d(x, size)


def align_features(
    student: Tensor, teacher: Tensor, projection: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """Bring student and teacher features [B, C, H, W] to one shape.

    Spatially, the larger map is average-pooled to the smaller (as activation AT does).
    Across channels, with ``projection`` None ("pool"): the wider tensor's adjacent channels
    are averaged in blocks down to the narrower width (parameter-free; the abstract's
    "block operations ... to save computation"); with a ``projection`` ("conv", e.g. a
    learned ``nn.Conv2d(C_s, C_t, 1)``), the student's features are projected to the
    teacher's width and the teacher is left as it is.

    Returns:
        (student, teacher), both [B, C', H', W'].
    """
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            "expected student and teacher features [B, C, H, W] with the same B, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    student, teacher = pool_to(student, size), pool_to(teacher, size)
    if projection is not None:
        student = projection(student)
        if student.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"the projection maps the student to {student.shape[1]} channels but the "
                f"teacher has {teacher.shape[1]}: build it as nn.Conv2d(C_s, C_t, 1)"
            )
        return student, teacher
    channels = min(student.shape[1], teacher.shape[1])
    return _pool_channels(student, channels), _pool_channels(teacher, channels)


def afb_loss(student_afb: Tensor, teacher_afb: Tensor) -> Tensor:
    """Eq. (3): mean squared error of two aligned AFBs (teacher detached), a scalar.

    The mean runs over the batch, channels and positions (FitNets' feature distance); the
    paper names no other.
    """
    if student_afb.shape != teacher_afb.shape:
        raise ValueError(
            f"AFBs must be aligned first (align_features): got {tuple(student_afb.shape)} and "
            f"{tuple(teacher_afb.shape)}"
        )
    return F.mse_loss(at_least_fp32(student_afb), at_least_fp32(teacher_afb.detach()))
