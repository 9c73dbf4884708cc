"""Notebook 02, activation-based AT: the attention map and the AT loss (both forms).

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from atcourse.distill import at_loss, attention_map

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

__all__ = ["check_attention_map", "check_at_loss", "check_at_loss_paper", "WHERE_STUDENTS_LOOK"]


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


def _paper_form_mistakes(s: Tensor, t: Tensor) -> list[tuple[Tensor, str]]:
    """The usual wrong versions of Eq. 2's term on same-size features, with their diagnoses."""

    def amap(x: Tensor, power: int = 2, normalize: bool = True) -> Tensor:
        m = x.abs().pow(power).mean(1).flatten(1)  # [B, H*W]
        return F.normalize(m, dim=1) if normalize else m

    d = amap(s) - amap(t)
    raw_s, raw_t = amap(s, normalize=False), amap(t, normalize=False)
    return [
        (
            d.pow(2).sum(1).mean(),
            "you squared the norm: Eq. 2's term is ||d||_2 itself (the square root of the "
            "sum of squares over the positions), averaged over the batch",
        ),
        (
            d.pow(2).mean(),
            "that is the code form (the mean of the squared differences over batch and "
            "positions); Eq. 2 takes each image's L2 norm over its positions, then the mean "
            "over the batch",
        ),
        (
            d.norm(),
            "take one norm per image (over its H*W positions), then average over the batch: "
            "not one norm of the whole batch",
        ),
        (d.norm(dim=1).sum(), "average the per-image norms over the batch, do not sum them"),
        (
            (raw_s - raw_t).norm(dim=1).mean(),
            "normalize each map first: divide each image's flattened map by its L2 norm "
            "(F.normalize(..., dim=1)) before taking the difference",
        ),
        (
            (raw_s / raw_s.norm() - raw_t / raw_t.norm()).norm(dim=1).mean(),
            "you normalized by the norm of the whole batch: normalize each image's map by "
            "its own L2 norm",
        ),
        (
            d.abs().sum(1).mean(),
            "that is the L1 norm (a sum of absolute values); with p = 2 Eq. 2 uses the L2 "
            "norm, the square root of the sum of squares",
        ),
        (
            (amap(s, power=1) - amap(t, power=1)).norm(dim=1).mean(),
            "you ignored p: the map is the channel mean of |A|**2, not of |A|",
        ),
    ]


def check_at_loss_paper(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(student_features [B, C_s, H_s, W_s], teacher_features [B, C_t, H_t, W_t])``.

    The paper's form of the AT loss (Zagoruyko & Komodakis 2017, Eq. 2's term;
    :func:`atcourse.distill.at_loss` with ``mode="paper"``, p = 2): the normalized
    channel-mean maps Q / ||Q||_2 of both, then each image's L2 norm of their difference
    (not squared), averaged over the batch; a scalar. When the grids differ, the larger
    *features* are average-pooled to the smaller grid before the maps are taken. The
    teacher is a fixed target.
    """
    what = "at_loss (paper form)"
    B, Cs, Ct, H, W = 3, 2, 4, 4, 4
    s, t = _inputs(B, Cs, H, W, seed=9), _inputs(B, Ct, H, W, seed=10)
    hint = (
        f"(student and teacher have {Cs} and {Ct} channels: reduce each over its channels "
        "to an [H, W] map before comparing them)"
    )
    got = _as_tensor(_call(fn, s, t, hint=hint), what)
    _require_scalar(got, B, H * W, what)
    _diagnose(got.reshape(()), at_loss(s, t, p=2, mode="paper"), _paper_form_mistakes(s, t), what)

    # Different grids, as between a 32x32 student group and a 16x16 teacher group.
    s8, t4 = _inputs(B, Cs, 8, 8, seed=11), _inputs(B, Ct, 4, 4, seed=12)
    pool_hint = (
        "(the student's grid is 8x8, the teacher's 4x4: average-pool the larger features to "
        "the smaller grid first, F.adaptive_avg_pool2d(features, (4, 4)))"
    )
    got = _as_tensor(_call(fn, s8, t4, hint=pool_hint), what)
    _require_scalar(got, B, 16, what)

    def paper(s_map: Tensor, t_map: Tensor) -> Tensor:  # maps [B, h, w], not normalized
        return (
            (F.normalize(s_map.flatten(1), dim=1) - F.normalize(t_map.flatten(1), dim=1))
            .norm(dim=1)
            .mean()
        )

    t_map = t4.pow(2).mean(1)
    pooled_map = F.adaptive_avg_pool2d(s8.pow(2).mean(1, keepdim=True), (4, 4))[:, 0]
    upsampled = F.interpolate(t4, size=(8, 8), mode="nearest").pow(2).mean(1)
    _diagnose(
        got.reshape(()),
        at_loss(s8, t4, p=2, mode="paper"),
        [
            (
                paper(pooled_map, t_map),
                "you pooled the student's map; pool its features instead, before the power "
                "and the channel mean (the reference pools the larger features, as at_loss does)",
            ),
            (
                paper(s8.pow(2).mean(1), upsampled),
                "you upsampled the teacher's features; average-pool the larger grid down to "
                "the smaller one instead, so no position is invented",
            ),
        ],
        what + " with an 8x8 student and a 4x4 teacher",
    )
    _teacher_gets_no_grad(fn, s, t, what=what)
    _ok(f"{what}: correct (per-image L2 norm, averaged; larger grid pooled; teacher detached)")


# --------------------------------------------------------------------------- predict, then run


_STUDENTS = {"baseline": "alone", "at": "AT", "kd": "KD", "at+kd": "AT+KD"}

WHERE_STUDENTS_LOOK = Prediction(
    prompt="Four students differ only in their loss: the student alone; AT, which matches "
    "the teacher's attention maps at the three groups; KD, which matches its outputs; and "
    "AT+KD. In the last group, whose attention map will put the largest share of its mass "
    "on the object (over the test set, section 7)?",
    choices={
        "baseline": "the student alone",
        "at": "the AT student",
        "kd": "the KD student",
        "at+kd": "the AT+KD student",
    },
    observed=tuple(_STUDENTS),
    decide=lambda v: _largest(v, tuple(_STUDENTS)),
    measured=lambda v: "last group, attention mass on the object: " + _percentages(v, _STUDENTS),
    why={
        "baseline": "Neither loss moved the attention towards the object in this run. On a "
        "very short run (smoke: one epoch) the students are still near their shared "
        "initialisation; and a teacher that does not look at the object itself has no such "
        "attention to pass on.",
        "at": "AT's loss pulls the student's normalized maps towards the teacher's, group by "
        "group, and the teacher's last group looks at the object: so does the student's. KD "
        "never sees a map; whatever alignment its student gains comes through the outputs.",
        "kd": "KD never sees a map, yet its student looks at the object most. On shapes only "
        "the object predicts the class, so whatever makes a student right also makes it look "
        "at the object; the AT students copy the teacher's maps, which are not all on the "
        "object either. Differences of a point or two are within what a seed moves.",
        "at+kd": "AT+KD gets both pulls: the maps of AT and the outputs of KD, and both push "
        "towards a student that looks where the teacher looks. Its lead over AT alone is "
        "usually within what another seed would change.",
    },
)
