"""Notebook 04, CAM and CAT-KD: class activation maps and the CAT loss.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from atcourse.distill import cat_loss, class_activation_maps

from ._common import (
    ExerciseError,
    Prediction,
    _as_tensor,
    _call,
    _diagnose,
    _inputs,
    _largest,
    _ok,
    _percentages,
    _require_scalar,
    _teacher_gets_no_grad,
)

__all__ = ["check_class_activation_maps", "check_cat_loss", "CAT_KD_RANK"]


def check_class_activation_maps(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(features [B, C, H, W], weight [K, C]) -> CAMs [B, K, H, W]``.

    Zhou et al. 2016: CAM_k(x, y) = sum_c W[k, c] A_c(x, y), the classifier applied at
    every position (:func:`atcourse.distill.class_activation_maps`); averaged over the
    positions it gives the logits without the bias.
    """
    what = "class_activation_maps"
    B, C, K, H, W = 2, 3, 4, 4, 5  # H != W and C != K, so swapped dimensions show
    features, weight = _inputs(B, C, H, W, seed=21), _inputs(K, C, seed=22, scale=1.0)
    got = _as_tensor(
        _call(
            fn,
            features,
            weight,
            hint=f"(features [B={B}, C={C}, H={H}, W={W}], weight [K={K}, C={C}]: contract "
            "the C dimension of both, e.g. torch.einsum('kc,bchw->bkhw', weight, features))",
        ),
        what,
    )
    expected = class_activation_maps(features, weight)
    if got.shape != expected.shape:
        hint = ""
        if sorted(got.shape) == sorted(expected.shape):
            hint = " (the right sizes in the wrong order: put the classes in dim 1)"
        raise ExerciseError(
            f"{what}: expected shape {list(expected.shape)} [B, K, H, W], got "
            f"{list(got.shape)}{hint}"
        )
    flat = expected.flatten(2)
    _diagnose(
        got,
        expected,
        [
            (
                expected / C,
                "you averaged over the channels; a CAM is the classifier's weighted SUM "
                "sum_c W[k, c] A_c, the dot product the linear layer computes",
            ),
            (
                F.relu(expected),
                "do not apply a ReLU: CAM values can be negative (evidence against the "
                "class), and only then do they average to the logits; clip only for display",
            ),
            (
                F.normalize(flat, dim=2).view_as(expected),
                "do not normalize the maps: their average must stay equal to the logit",
            ),
            (
                torch.softmax(flat, dim=2).view_as(expected),
                "no softmax over positions: a CAM is linear in the features",
            ),
        ],
        what,
    )
    _ok(
        f"{what}: correct shape [B, K, H, W]; averaged over positions they are the "
        "logits without the bias"
    )


def check_cat_loss(fn: Callable[[Tensor, Tensor, int], Tensor]) -> None:
    """Check ``fn(student_cams, teacher_cams, R) -> scalar``, CAT without normalization.

    The reference code's loss (:func:`atcourse.distill.cat_loss`, ``normalize=False``):
    both CAM tensors adaptive-average-pooled to R x R, then the mean squared difference
    over batch, classes and cells; the teacher is a fixed target. Student and teacher maps
    differ in size here (8x8 and 4x4), as they do between some architectures.
    """
    what = "cat_loss"
    B, K = 2, 3
    s, t = _inputs(B, K, 8, 8, seed=31), _inputs(B, K, 4, 4, seed=32)
    hint = (
        "(student CAMs [2, 3, 8, 8], teacher CAMs [2, 3, 4, 4]: pool each to R x R with "
        "F.adaptive_avg_pool2d(cams, R) so their sizes agree)"
    )
    expected = cat_loss(s, t, pool=2)
    got = _as_tensor(_call(fn, s, t, 2, hint=hint), what)
    _require_scalar(got, B, K * 4, what)
    got = got.reshape(())
    ps, pt = F.adaptive_avg_pool2d(s, 2), F.adaptive_avg_pool2d(t, 2)
    diff = ps - pt
    _diagnose(
        got,
        expected,
        [
            (
                (F.adaptive_max_pool2d(s, 2) - F.adaptive_max_pool2d(t, 2)).pow(2).mean(),
                "you max-pooled; CAT-KD average-pools (adaptive_avg_pool2d), which keeps "
                "each region's mean evidence (and the logit as the maps' mean)",
            ),
            (
                diff.pow(2).sum(),
                "you summed the squared differences; take the mean over batch, classes and "
                "cells (F.mse_loss's default)",
            ),
            (
                diff.pow(2).sum(dim=(1, 2, 3)).mean(),
                "you summed over classes and cells and averaged over the batch only; the "
                "reference averages over everything",
            ),
            (
                diff.pow(2).mean().sqrt(),
                "you took the square root (an RMSE); CAT is the plain mean squared error",
            ),
            (diff.abs().mean(), "square the differences (MSE), do not take their absolute value"),
            (
                cat_loss(s, t, pool=2, normalize=True),
                "you normalized the pooled maps; this exercise is the default form, "
                "normalize=False (the maps' scale, hence the logits, is part of the target)",
            ),
            (
                (s - F.interpolate(t, size=(8, 8), mode="nearest")).pow(2).mean(),
                "you compared the maps at full resolution; pool both to R x R first",
            ),
        ],
        what,
    )
    got_r1 = _as_tensor(_call(fn, s, t, 1, hint=hint), what + " with R=1").reshape(())
    expected_r1 = cat_loss(s, t, pool=1)
    _diagnose(
        got_r1,
        expected_r1,
        [(expected, "you ignored R: with R = 1 each map must be pooled to a single value")],
        what + " with R=1",
    )
    _teacher_gets_no_grad(fn, s, t, 2, what=what)
    _ok(
        f"{what}: correct ({got.item():.4f} at R=2, {got_r1.item():.4f} at R=1, which is "
        "the MSE of the bias-free logits), teacher detached"
    )


# --------------------------------------------------------------------------- predict, then run


_STUDENTS = {"kd": "KD", "at": "AT", "cat_kd": "CAT-KD"}

CAT_KD_RANK = Prediction(
    prompt="On CIFAR-100 the CAT-KD paper puts CAT-KD above KD and AT on each of the six "
    "pairs of section 10's table (WRN-40-2 to WRN-16-2: 75.60 against 74.92 and 74.08). On "
    "shapes, with the same budget for each, which of the three students will end with the "
    "highest test accuracy?",
    choices={"kd": "the KD student", "at": "the AT student", "cat_kd": "the CAT-KD student"},
    observed=tuple(_STUDENTS),
    decide=lambda v: _largest(v, tuple(_STUDENTS)),
    measured=lambda v: "test accuracy: " + _percentages(v, _STUDENTS),
    why={
        "kd": "KD matches the softened outputs only; ahead of both map-based methods means "
        "their map terms did not help this student within this budget. With one seed, a gap "
        "of a point or two is noise.",
        "at": "The reverse of the paper's order. With 10 classes and 8 x 8 maps there is "
        "little class-specific layout to transfer, while AT matches three groups of feature "
        "maps at up to 32 x 32: a richer signal for a small student on a short schedule. "
        "With 100 classes and longer training the balance can turn (section 11).",
        "cat_kd": "As in the paper: pooled to R x R, each class map keeps its mean, the "
        "bias-free logit, so CAT contains KD-like logit matching, and adds where each "
        "class's evidence sits. One seed cannot tell a gap of a point or two from noise.",
    },
)
