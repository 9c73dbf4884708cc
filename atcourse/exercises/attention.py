"""Notebook 02, activation-based AT: the attention map and the AT loss (both forms)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from atcourse.distill import at_loss, attention_map

from ._common import (
    ExerciseError,
    _as_tensor,
    _call,
    _diagnose,
    _inputs,
    _ok,
    _require_scalar,
    _teacher_gets_no_grad,
)

__all__ = ["check_attention_map", "check_at_loss"]


def check_attention_map(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Check ``fn(features [B, C, H, W], p) -> [B, H, W]``.

    The exercise's map is :func:`atcourse.distill.attention_map` with ``reduce="mean"``:
    mean over channels of |A|^p, then each sample's flattened map divided by its L2 norm
    (Zagoruyko & Komodakis 2017, Section 3.1 and the normalization of Eq. 2).
    """
    what = "attention_map"
    B, C, H, W = 2, 3, 4, 5  # all different, so a wrong reduction shows in the shape
    x = _inputs(B, C, H, W, seed=6)
    got = _as_tensor(_call(fn, x, 2), what)
    if got.shape != (B, H, W):
        if got.shape == (B, H * W):
            hint = "you returned the flattened map: reshape it back to [B, H, W]"
        elif got.dim() == 3 and got.shape != (B, H, W):
            hint = "you reduced over the wrong dimension: channels are dim 1 of [B, C, H, W]"
        elif got.dim() == 4:
            hint = "you did not reduce over the channels (dim 1)"
        else:
            hint = "reduce over the channels (dim 1) only"
        raise ExerciseError(
            f"wrong output shape: expected [B,H,W] = {[B, H, W]}, got {list(got.shape)}: {hint}"
        )

    def per_sample(m: Tensor) -> Tensor:
        return F.normalize(m.flatten(1), dim=1).view_as(m)

    sq = x.pow(2)
    expected = attention_map(x, p=2, reduce="mean")
    raw = sq.mean(1)
    not_normalized = (
        "your map is not normalized per sample: divide each sample's flattened map by its "
        "L2 norm (F.normalize(am.flatten(1), dim=1))"
    )
    _diagnose(
        got,
        expected,
        [
            (raw, not_normalized),
            (sq.sum(1), not_normalized),
            (
                raw / raw.norm(),
                "you normalized over the whole batch: normalize each sample's "
                "map by its own L2 norm",
            ),
            (
                raw / raw.flatten(1).sum(1).view(B, 1, 1),
                "you normalized to unit sum (L1); Eq. 2 divides by the L2 norm",
            ),
            (
                F.normalize(raw, dim=-1),
                "you normalized each row of the map separately: "
                "flatten each sample's [H, W] map first, then divide by its L2 norm",
            ),
            (
                F.normalize(raw, dim=1),
                "you normalized each column of the map separately: "
                "flatten each sample's [H, W] map first, then divide by its L2 norm",
            ),
            (per_sample(x.abs().mean(1)), "you ignored p: take |A|**p before the mean"),
            (
                per_sample(sq.amax(1)),
                "you took the max over channels; the exercise asks for the mean of |A|^p",
            ),
        ],
        what,
    )
    got3 = _as_tensor(_call(fn, x, 3), what)
    _diagnose(
        got3,
        attention_map(x, p=3, reduce="mean"),
        [
            (
                per_sample(x.pow(3).mean(1)),
                "take the absolute value before the power: with "
                "odd p, x**p keeps the sign and negative activations cancel positive ones",
            ),
            (expected, "you ignored p (the map for p=3 equals the one for p=2)"),
        ],
        what + " with p=3",
    )
    _ok("attention_map: correct shape [B,H,W], per-sample unit L2 norm, p handled")


def check_at_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(student_features [B, C_s, H, W], teacher_features [B, C_t, H, W]) -> scalar``.

    The exercise's loss is the reference code's form (:func:`atcourse.distill.at_loss`,
    ``mode="code"``, p = 2): the mean over batch and positions of the squared difference
    of the L2-normalized channel-mean maps. Student and teacher differ in channel count.
    """
    what = "at_loss"
    B, Cs, Ct, H, W = 3, 2, 4, 4, 4
    s, t = _inputs(B, Cs, H, W, seed=7), _inputs(B, Ct, H, W, seed=8)
    got = _as_tensor(
        _call(
            fn,
            s,
            t,
            hint=f"(student and teacher have {Cs} and {Ct} channels: reduce each "
            "over its channels to an [H, W] map before comparing them)",
        ),
        what,
    )
    _require_scalar(got, B, H * W, what)
    got = got.reshape(())
    expected = at_loss(s, t, p=2, mode="code")

    def amap(x: Tensor, normalize: bool = True) -> Tensor:
        m = x.pow(2).mean(1).flatten(1)
        return F.normalize(m, dim=1) if normalize else m

    d = amap(s) - amap(t)
    raw_d = amap(s, False) - amap(t, False)
    n = H * W
    _diagnose(
        got,
        expected,
        [
            (
                raw_d.pow(2).mean(),
                "normalize each map first: divide each sample's flattened "
                "map by its L2 norm (F.normalize(..., dim=1)) before taking the difference",
            ),
            (
                expected * n,
                "you summed over positions; the reference code averages over the "
                "batch AND the H*W positions: use .mean() over everything",
            ),
            (
                d.norm(dim=1).mean(),
                "you computed the paper's Eq. 2 term (an L2 norm, not "
                "squared); the code form is the mean of the squared differences",
            ),
            (d.abs().mean(), "square the difference (p=2) instead of taking its absolute value"),
            (d.pow(2).sum(), "you summed over the batch and positions: take the mean"),
            (
                (
                    F.normalize(s.mean(1).flatten(1), dim=1)
                    - F.normalize(t.mean(1).flatten(1), dim=1)
                )
                .pow(2)
                .mean(),
                "square the activations (p=2) before averaging over channels: the map is "
                "mean_c A_c**2, not mean_c A_c",
            ),
        ],
        what,
    )
    _teacher_gets_no_grad(fn, s, t, what=what)
    _ok(f"at_loss: correct ({got.item():.5f} on the test features, teacher detached)")
