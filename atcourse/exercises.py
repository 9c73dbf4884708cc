"""Checkers for the notebooks' exercises.

In a notebook an exercise is a solution cell, whose solution lines sit between a line
``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` (the student edition replaces them with
a stub that raises ``NotImplementedError``), followed by a check cell::

    atcourse.exercises.check_kd_loss(my_kd_loss)

A checker runs the learner's function on small fixed tensors, compares it with the
reference implementation in :mod:`atcourse.distill`, and when they differ raises
:class:`ExerciseError` whose message names the likely mistake (a missing ``T**2``, a
``KLDivLoss`` reduction that also divides by the number of classes, a map normalized over
the wrong dimension, ...). A correct answer prints one line starting with "✓".

"Explain why" exercises are multiple choice: :func:`question` shows one,
:func:`check_choice` checks an answer and explains a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distill import (
    at_loss,
    attention_distillation_loss,
    attention_map,
    cat_loss,
    class_activation_maps,
    kd_loss,
)
from .models import attention_rollout

__all__ = [
    "ExerciseError",
    "check_kd_loss",
    "check_softmax_T",
    "check_attention_map",
    "check_at_loss",
    "check_reduction_bug",
    "check_input_gradient",
    "check_flip_penalty",
    "check_seed_summary",
    "check_gap_closed",
    "check_choice",
    "question",
    "QUESTIONS",
    "check_attention_distillation_loss",
    "check_attention_rollout",
    "check_class_activation_maps",
    "check_cat_loss",
    "check_decay_weights",
    "check_attentional_feature_block",
]


class ExerciseError(AssertionError):
    """A wrong answer to an exercise; the message says what is probably wrong."""


# --------------------------------------------------------------------------- helpers


def _ok(message: str) -> None:
    print(f"✓ {message}")


def _inputs(*shape: int, seed: int, scale: float = 2.0) -> Tensor:
    """Fixed inputs: the same numbers on every machine (CPU generator, float32)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale


def _call(fn: Callable[..., Any], *args: Any, hint: str = "") -> Any:
    """Call the learner's function; a crash becomes an ExerciseError that shows the inputs.

    ``NotImplementedError`` passes through untouched: it is the student edition's stub
    saying the exercise is not done yet, not a wrong answer.
    """
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as err:
        shapes = ", ".join(str(list(a.shape)) if isinstance(a, Tensor) else repr(a) for a in args)
        raise ExerciseError(
            f"your function raised {type(err).__name__}: {err}\n"
            f"(called with {shapes}){' ' + hint if hint else ''}"
        ) from err


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    raise ExerciseError(f"{what} should return a tensor, got {type(value).__name__}")


def _close(a: Tensor, b: Tensor, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=rtol, atol=atol))


def _diagnose(
    got: Tensor, expected: Tensor, mistakes: Sequence[tuple[Tensor, str]], what: str
) -> None:
    """Raise with the message of the first known mistake ``got`` matches, else a generic one."""
    if _close(got, expected):
        return
    for wrong, message in mistakes:
        if _close(got, wrong):
            raise ExerciseError(message)
    if got.numel() == 1 and expected.numel() == 1:
        raise ExerciseError(
            f"{what}: expected {expected.item():.6f}, got {got.item():.6f} "
            f"(ratio {got.item() / expected.item():.4g})"
            if expected.item() != 0
            else f"{what}: expected 0, got {got.item():.6f}"
        )
    err = (got.detach().float() - expected).abs().max().item()
    raise ExerciseError(f"{what}: values differ from the reference (largest difference {err:.3g})")


def _require_scalar(value: Tensor, batch: int, classes_or_positions: int, what: str) -> None:
    if value.dim() == 0 or value.numel() == 1:
        return
    shape = list(value.shape)
    if shape == [batch]:
        raise ExerciseError(
            f"{what} returned one value per sample, shape {shape}: average over the batch "
            "too (the loss is a scalar)"
        )
    if len(shape) == 2 and shape[0] == batch:
        raise ExerciseError(
            f"{what} returned shape {shape}: sum over dim 1 ({classes_or_positions} "
            "entries per sample), then average over the batch, to get a scalar"
        )
    raise ExerciseError(f"{what} should return a scalar (0-d tensor), got shape {shape}")


def _teacher_gets_no_grad(
    fn: Callable[..., Any], student: Tensor, teacher: Tensor, *rest: Any, what: str
) -> None:
    """The teacher is a fixed target: a loss must not send gradients into its outputs."""
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    out = _as_tensor(_call(fn, s, t, *rest), what)
    if not out.requires_grad:
        raise ExerciseError(
            f"{what} is not differentiable w.r.t. the student's input: did you call .item(), "
            "detach the student, or compute it under torch.no_grad()?"
        )
    s_grad, t_grad = torch.autograd.grad(out.sum(), (s, t), allow_unused=True)
    if s_grad is None or not torch.any(s_grad != 0):
        raise ExerciseError(f"{what} sends no gradient to the student: it cannot train it")
    if t_grad is not None and torch.any(t_grad != 0):
        raise ExerciseError(
            f"{what} sends gradients into the teacher's tensor: detach it "
            "(teacher.detach()) so the teacher is a fixed target"
        )


# --------------------------------------------------------------------------- KD


def check_softmax_T(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Check ``fn(logits [B, K], T) -> probabilities [B, K]``, softmax(logits / T) per row.

    Hinton et al. 2015, Eq. 1: q_i = exp(z_i / T) / sum_j exp(z_j / T).
    """
    what = "softmax_T"
    logits, T = _inputs(3, 5, seed=1), 4.0
    got = _as_tensor(_call(fn, logits, T), what)
    if got.shape != logits.shape:
        raise ExerciseError(
            f"wrong output shape: expected {list(logits.shape)} (same as the logits), "
            f"got {list(got.shape)}"
        )
    expected = torch.softmax(logits / T, dim=1)
    _diagnose(
        got,
        expected,
        [
            (torch.softmax(logits, dim=1), "you ignored T: divide the logits by T first"),
            (torch.softmax(logits * T, dim=1), "you multiplied by T: divide the logits by T"),
            (
                torch.softmax(logits / T, dim=0),
                "you reduced over the wrong dimension: that normalizes over the batch "
                "(dim=0); each row (one sample's K classes, dim=1) must sum to 1",
            ),
            (
                torch.log_softmax(logits / T, dim=1),
                "you returned log-probabilities (log_softmax); return probabilities",
            ),
            (torch.exp(logits / T), "the rows do not sum to 1: divide exp(z / T) by its row sum"),
        ],
        what,
    )
    # A temperature near 0 or large logits overflow a naive exp(z) / sum(exp(z)).
    big = logits * 200.0
    got_big = _as_tensor(_call(fn, big, 1.0), what)
    if not torch.isfinite(got_big).all():
        raise ExerciseError(
            "your softmax overflows on large logits (inf / inf = nan): subtract each row's "
            "max before exp, or use torch.softmax"
        )
    _diagnose(got_big, torch.softmax(big, dim=1), [], what + " on large logits")
    _ok("softmax_T: correct, rows sum to 1 and large logits are stable")


def check_kd_loss(fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Check ``fn(student_logits [B, K], teacher_logits [B, K], T) -> scalar``.

    The reference is :func:`atcourse.distill.kd_loss`: T^2 * KL(p_T || p_S), summed over
    classes, averaged over the batch (Hinton et al. 2015).
    """
    what = "kd_loss"
    B, K, T = 4, 5, 4.0
    s, t = _inputs(B, K, seed=2), _inputs(B, K, seed=3)
    got = _as_tensor(_call(fn, s, t, T), what)
    _require_scalar(got, B, K, what)
    got = got.reshape(())
    expected = kd_loss(s, t, T)

    log_ps, log_pt = F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)
    p_s, p_t = log_ps.exp(), log_pt.exp()
    entropy_t = -(p_t * log_pt).sum(1).mean()
    reverse = (p_s * (log_ps - log_pt)).sum(1).mean() * T * T
    no_temp = (
        F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
        * T
        * T
    )
    probs_as_input = (p_t * (log_pt - p_s)).sum(1).mean() * T * T
    mistakes = [
        (expected / (T * T), "your loss is T^2 too small: did you forget to multiply by T**2?"),
        (expected / T, "your loss is T too small: multiply by T**2, not by T"),
        (
            expected / K,
            "you averaged over classes too: KLDivLoss(reduction='mean') divides by B*K, "
            "use reduction='batchmean' (sum over classes, mean over the batch)",
        ),
        (
            expected / (K * T * T),
            "two mistakes: KLDivLoss(reduction='mean') divides by B*K (use "
            "reduction='batchmean'), and the T**2 factor is missing",
        ),
        (
            expected * B,
            "you summed over the batch too (reduction='sum'): average over the batch "
            "(reduction='batchmean') so the loss does not grow with the batch size",
        ),
        (
            expected + T * T * entropy_t,
            "you used cross-entropy with soft targets: it differs from KL by the teacher's "
            "entropy (same gradient, but not 0 when the student matches the teacher); "
            "subtract it, or use KL",
        ),
        (
            expected / (T * T) + entropy_t,
            "you used cross-entropy with soft targets and no T**2: it differs from KL by the "
            "teacher's entropy, and the T**2 factor is missing",
        ),
        (
            reverse,
            "you computed KL(p_S || p_T), the reverse direction: F.kl_div(input, target) "
            "wants input = log-probabilities of the student and target = the teacher's",
        ),
        (
            probs_as_input,
            "F.kl_div's first argument must be log-probabilities (F.log_softmax), not "
            "probabilities",
        ),
        (no_temp, "you did not soften the logits: divide both by T before the softmax"),
        (-expected, "your loss has the wrong sign: KL is >= 0"),
    ]
    _diagnose(got, expected, mistakes, what)

    same = _as_tensor(_call(fn, s, s.clone(), T), what).reshape(())
    if abs(same.item()) > 1e-5:
        raise ExerciseError(
            f"your loss is {same.item():.4f}, not 0, when student and teacher logits are "
            "equal: a cross-entropy with soft targets leaves the teacher's entropy in"
        )
    _teacher_gets_no_grad(fn, s, t, T, what=what)
    _ok(f"kd_loss: correct ({got.item():.4f} on the test logits, 0 for equal logits)")


def check_reduction_bug(
    reduction: str, factor: float, num_classes: int = 10, batch_size: int = 128
) -> None:
    """Check the fix for a KD line that uses ``nn.KLDivLoss()`` with its default reduction.

    The exercise shows::

        loss = nn.KLDivLoss()(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1)) * T**2

    on logits [batch_size, num_classes] and asks (1) which ``reduction=`` makes it Hinton's loss
    (sum over classes, mean over the batch) and (2) by what factor the buggy line is too
    small. The reduction is checked by running ``nn.KLDivLoss(reduction=...)``.

    Args:
        reduction: the learner's fix, a string passed to ``nn.KLDivLoss``.
        factor: how many times too small the buggy loss is.
        num_classes: K in the exercise's statement.
        batch_size: B in the exercise's statement (to recognise a factor of B or B*K).
    """
    valid = ("none", "mean", "sum", "batchmean")
    if reduction not in valid:
        raise ExerciseError(f"nn.KLDivLoss accepts reduction in {valid}; got {reduction!r}")
    B, K, T = batch_size, num_classes, 4.0
    if reduction == "mean":
        raise ExerciseError(
            "'mean' is the buggy default itself: it averages over all B*K entries, so it "
            "divides by the number of classes K as well as the batch size B"
        )
    if reduction == "none":
        raise ExerciseError(
            "'none' returns the [B, K] elementwise terms: you would still have to sum over "
            "classes and average over the batch, which is exactly reduction='batchmean'"
        )
    if reduction == "sum":
        raise ExerciseError(
            "'sum' adds over the batch too: the loss would grow with the batch size (and the "
            "learning rate would have to shrink with it); divide by B, i.e. 'batchmean'"
        )
    # Only 'batchmean' is left: run it, so the answer is checked by what it computes.
    s, t = _inputs(8, K, seed=4), _inputs(8, K, seed=5)
    fixed = nn.KLDivLoss(reduction=reduction)(F.log_softmax(s / T, 1), F.softmax(t / T, 1))
    if not _close(fixed * T * T, kd_loss(s, t, T)):  # pragma: no cover - would be a torch change
        raise ExerciseError("nn.KLDivLoss(reduction='batchmean') did not reproduce kd_loss")
    if math.isclose(factor, B * K, rel_tol=1e-6) or math.isclose(factor, 1 / K, rel_tol=1e-6):
        raise ExerciseError(
            f"the reduction is right, the factor is not: the buggy line divides by B*K, the "
            f"right one by B, so the buggy loss is K = {K} times too small (multiply by K)"
        )
    if math.isclose(factor, B, rel_tol=1e-6):
        raise ExerciseError(
            f"the reduction is right, the factor is not: both lines divide by the batch size "
            f"B = {B}; the extra division is by the number of classes, K = {K}"
        )
    if not math.isclose(factor, K, rel_tol=1e-6):
        raise ExerciseError(
            f"the reduction is right, the factor is not: compare 'mean' (divides by B*K) "
            f"with 'batchmean' (divides by B) for K = {K} classes"
        )
    _ok(f"reduction='batchmean' fixes it; the default was {K} times too small (K = {K})")


# --------------------------------------------------------------------------- attention


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


# --------------------------------------------------------------------------- gradient AT


class _SmoothNet(nn.Module):
    """conv -> tanh -> mean -> linear on [B, 3, H, W]: a tiny network with smooth gradients.

    Not mirror-symmetric (its kernels are random), so its input gradient has a non-zero
    flip penalty that a checker can compare.
    """

    def __init__(self, seed: int, classes: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)
        for param in self.parameters():
            param.data = torch.randn(param.shape, generator=gen) * 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def check_input_gradient(fn: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(model, images [B, 3, H, W], labels [B]) -> J [B, 3, H, W]``.

    J = dCE/dx (Zagoruyko & Komodakis 2017, Section 3.2), row b the gradient of image b's
    own loss (the gradient of the summed cross-entropy), whether or not ``images``
    requires grad.
    """
    from .distill.gradient import input_gradient

    what = "input_gradient"
    net = _SmoothNet(3).eval()
    x = _inputs(5, 3, 8, 8, seed=4, scale=1.0)
    y = torch.tensor([0, 1, 2, 0, 1])
    expected = input_gradient(net, x, y)
    got = _as_tensor(_call(fn, net, x, y), what)
    if got.shape != expected.shape:
        raise ExerciseError(
            f"{what}: expected shape {list(expected.shape)} (one value per input pixel and "
            f"colour channel, like the images), got {list(got.shape)}"
        )
    _diagnose(
        got,
        expected,
        [
            (
                expected / len(y),
                f"your gradient is {len(y)} times too small: the batch-mean cross-entropy "
                "divides each image's gradient by B; use reduction='sum' so row b is the "
                "gradient of image b's own loss",
            ),
            (-expected, "the sign is flipped: take the gradient of the loss, not of -loss"),
        ],
        what,
    )
    x_grad = x.clone().requires_grad_(True)
    again = _as_tensor(_call(fn, net, x_grad, y), what)
    if not _close(again, expected):
        raise ExerciseError(
            f"{what}: the result changes when the images already require grad: "
            "differentiate a fresh leaf, images.detach().requires_grad_(True)"
        )
    if x_grad.grad is not None:
        raise ExerciseError(
            f"{what} left a .grad on the caller's images: use torch.autograd.grad(loss, x) "
            "on a detached copy rather than loss.backward()"
        )
    _ok(f"{what}: correct shape {list(got.shape)}, per-image gradients, input untouched")


def check_flip_penalty(fn: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(model, images, labels) -> scalar``: ``mean_b ||J(x) - flip(J(flip(x)))||_2``.

    The flip-invariance penalty of Section 3.2; J as in :func:`check_input_gradient`,
    flips left to right (along W), the norm per image over its 3 x H x W values.
    """
    from .distill.gradient import flip_invariance_loss, input_gradient

    what = "flip penalty"
    net = _SmoothNet(5).eval()
    x = _inputs(4, 3, 8, 8, seed=6, scale=1.0)
    y = torch.tensor([2, 0, 1, 1])
    expected = flip_invariance_loss(net, x, y, create_graph=False)
    got = _as_tensor(_call(fn, net, x, y), what)
    _require_scalar(got, len(y), 3 * 8 * 8, what)
    got = got.reshape(())

    def mirror(t: Tensor) -> Tensor:
        return torch.flip(t, dims=(-1,))

    def upside_down(t: Tensor) -> Tensor:
        return torch.flip(t, dims=(-2,))

    J = input_gradient(net, x, y)
    J_m = input_gradient(net, mirror(x), y)
    diff = J - mirror(J_m)
    _diagnose(
        got,
        expected,
        [
            (
                (J - J_m).flatten(1).norm(dim=1).mean(),
                "flip J(flip(x)) back before subtracting it, so both gradients are in x's "
                "coordinates",
            ),
            (
                (J - upside_down(input_gradient(net, upside_down(x), y)))
                .flatten(1)
                .norm(dim=1)
                .mean(),
                "you flipped upside down (dims=(-2,)); mirror left to right, along the "
                "width: dims=(-1,)",
            ),
            (diff.flatten(1).pow(2).sum(1).mean(), "take the norm, not its square"),
            (diff.flatten(1).norm(dim=1).sum(), "average the per-image norms, do not sum them"),
            (diff.norm(), "take one norm per image, then average: not one norm of the batch"),
        ],
        what,
    )
    _ok(f"{what}: correct ({got.item():.5f} on the test images)")


# --------------------------------------------------------------------------- leaderboard


def _as_pair(value: Any, what: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ExerciseError(f"{what} should return a pair (mean, std), got {value!r}")
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError) as err:
        raise ExerciseError(f"{what} should return two numbers, got {value!r}") from err


def check_seed_summary(fn: Callable[[Sequence[float]], tuple[float, float]]) -> None:
    """Check ``fn(values) -> (mean, std)``: the mean and the *sample* standard deviation.

    The leaderboard's spread over seeds divides by n - 1 (Bessel's correction): with three
    seeds the population formula (divide by n) understates the spread by a fifth.
    """
    what = "seed_summary"
    for values in ([0.80, 0.84, 0.85], [0.71, 0.69, 0.75, 0.70, 0.73]):
        n = len(values)
        mean = sum(values) / n
        ss = sum((v - mean) ** 2 for v in values)
        std = math.sqrt(ss / (n - 1))
        got_mean, got_std = _as_pair(_call(fn, list(values)), what)
        if not math.isclose(got_mean, mean, rel_tol=1e-6):
            if math.isclose(got_mean, std, rel_tol=1e-6):
                raise ExerciseError("you returned (std, mean): the order is (mean, std)")
            raise ExerciseError(f"{what}: mean of {values} should be {mean:.6f}, got {got_mean}")
        mistakes = [
            (math.sqrt(ss / n), "you divided by n (the population std, np.std's default): "
             "over a few seeds use the sample std, dividing by n - 1 (ddof=1)"),
            (ss / (n - 1), "you returned the variance: take its square root"),
            (ss / n, "you returned the population variance: divide by n - 1 and take the "
             "square root"),
            (std / math.sqrt(n), "that is the standard error of the mean (std / sqrt(n)); "
             "the leaderboard shows the spread of single runs, the std itself"),
        ]  # fmt: skip
        if not math.isclose(got_std, std, rel_tol=1e-6):
            for wrong, message in mistakes:
                if math.isclose(got_std, wrong, rel_tol=1e-6):
                    raise ExerciseError(message)
            raise ExerciseError(f"{what}: std of {values} should be {std:.6f}, got {got_std}")
    _ok("seed_summary: mean and sample standard deviation (n - 1), as in the leaderboard")


def check_gap_closed(fn: Callable[[float, float, float], float]) -> None:
    """Check ``fn(alone, distilled, teacher) -> fraction``: the share of the gap closed.

    (distilled - alone) / (teacher - alone): 0 means no better than the student trained
    alone, 1 means as good as the teacher. The same formula works on test errors (both
    differences change sign), which is how papers' error tables compare with accuracies.
    """
    what = "gap_closed"
    cases = [(91.23, 92.07, 93.69), (70.0, 75.0, 80.0), (64.60, 59.40, 74.64)]
    for alone, distilled, teacher in cases:
        expected = (distilled - alone) / (teacher - alone)
        got = _call(fn, alone, distilled, teacher)
        try:
            got = float(got)
        except (TypeError, ValueError) as err:
            raise ExerciseError(f"{what} should return a number, got {got!r}") from err
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        mistakes = [
            (100 * expected, "you returned a percentage: return the fraction (1.0 = the "
             "whole gap)"),
            (-expected, "the sign is reversed: a student better than the one trained alone "
             "should give a positive share"),
            ((teacher - distilled) / (teacher - alone), "that is the share of the gap left "
             "open (1 - the answer)"),
            ((distilled - alone) / teacher, "divide by the gap (teacher - alone), not by the "
             "teacher's accuracy"),
            ((distilled - alone) / (teacher - distilled), "divide by the whole gap between "
             "teacher and student alone (teacher - alone)"),
        ]  # fmt: skip
        for wrong, message in mistakes:
            if math.isclose(got, wrong, rel_tol=1e-6, abs_tol=1e-9):
                raise ExerciseError(message)
        raise ExerciseError(
            f"{what}({alone}, {distilled}, {teacher}) should be {expected:.4f}, got {got:.4f}"
        )
    errors = (8.77, 7.93, 6.31)  # the AT paper's test errors for the first case
    from_errors = float(_call(fn, *errors))
    if not math.isclose(from_errors, (7.93 - 8.77) / (6.31 - 8.77), rel_tol=1e-6):
        raise ExerciseError("on test errors the same formula should give the same share")
    _ok(
        f"gap_closed: AT closed {from_errors:.0%} of the teacher-student gap in the AT "
        f"paper's CIFAR-10 row; a negative share means the method hurt"
    )


# --------------------------------------------------------------------------- ViT attention


def check_attention_distillation_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(student_attn_logits, teacher_attn_logits) -> scalar``, maps (B, heads, N, N).

    The reference is :func:`atcourse.distill.attention_distillation_loss`: KL(teacher ||
    student) of the softmaxed rows (over keys, the last dimension), summed over keys,
    averaged over the batch, the heads and the queries.
    """
    what = "attention_distillation_loss"
    B, H, N = 2, 3, 5
    s, t = _inputs(B, H, N, N, seed=11), _inputs(B, H, N, N, seed=12)
    got = _as_tensor(_call(fn, s, t, hint="(maps are (B, heads, N, N))"), what)
    if got.numel() != 1:
        shape = list(got.shape)
        raise ExerciseError(
            f"{what} should return a scalar, got shape {shape}: sum over the keys (last "
            "dimension), then average over batch, heads and queries"
            + (" (you kept one value per row)" if shape == [B, H, N] else "")
        )
    got = got.reshape(())
    expected = attention_distillation_loss(s, t)

    log_q, log_p = F.log_softmax(s, -1), F.log_softmax(t, -1)
    p, q = log_p.exp(), log_q.exp()
    entropy = -(p * log_p).sum(-1).mean()
    log_q_cols, log_p_cols = F.log_softmax(s, -2), F.log_softmax(t, -2)
    by_columns = (log_p_cols.exp() * (log_p_cols - log_q_cols)).sum(-2).mean()
    reverse = (q * (log_q - log_p)).sum(-1).mean()
    probs_as_input = (p * (log_p - q)).sum(-1).mean()
    mistakes = [
        (
            expected + entropy,
            "you computed the cross-entropy -sum p log q (the paper's form): it differs from "
            "the KL by the teacher's entropy, so it is not 0 when the maps agree; subtract "
            "the entropy, or compute sum p (log p - log q)",
        ),
        (
            expected * H * N,
            "you divided by the batch size only (F.kl_div(..., reduction='batchmean') does "
            "that: it divides by the first dimension): average over the heads and the "
            "queries too, every row of every head is one distribution",
        ),
        (
            expected / N,
            "you averaged over the keys as well (reduction='mean' divides by all B*H*N*N "
            "entries): sum over the keys, average over the rest",
        ),
        (
            expected * B * H * N,
            "you summed over everything: sum over the keys only and average over batch, "
            "heads and queries",
        ),
        (
            by_columns,
            "you took the softmax over the queries (dim=-2): each ROW (one query, over all "
            "keys, dim=-1) is a distribution",
        ),
        (
            reverse,
            "you computed KL(student || teacher), the reverse direction: the teacher's "
            "probabilities weigh the log-ratio, sum p_T (log p_T - log p_S)",
        ),
        (
            probs_as_input,
            "F.kl_div's first argument must be log-probabilities (F.log_softmax), not "
            "probabilities",
        ),
        (-expected, "your loss has the wrong sign: KL is >= 0"),
    ]
    _diagnose(got, expected, mistakes, what)
    same = _as_tensor(_call(fn, t.clone(), t), what).reshape(())
    if abs(same.item()) > 1e-5:
        raise ExerciseError(
            f"your loss is {same.item():.4f}, not 0, when the student's maps equal the teacher's"
        )
    _teacher_gets_no_grad(fn, s, t, what=what)
    _ok(f"attention_distillation_loss: correct ({got.item():.5f} on the test maps, 0 if equal)")


def check_attention_rollout(fn: Callable[[Sequence[Tensor]], Tensor]) -> None:
    """Check ``fn(probs: list of (B, heads, N, N), first layer first) -> (B, N, N)``.

    The reference is :func:`atcourse.distill.attention_rollout` with ``residual=0.5``
    (Abnar & Zuidema 2020): average the heads, mix in the identity half and half,
    renormalize the rows, multiply the layers with the last one on the left.
    """
    what = "attention_rollout"
    B, H, N, L = 2, 2, 5, 3
    maps = [torch.softmax(_inputs(B, H, N, N, seed=20 + i), dim=-1) for i in range(L)]
    got = _as_tensor(_call(fn, maps, hint="(a list of L maps (B, heads, N, N))"), what)
    if got.shape != (B, N, N):
        raise ExerciseError(
            f"expected shape {[B, N, N]} (one (N, N) matrix per image, heads averaged), "
            f"got {list(got.shape)}"
        )
    expected = attention_rollout(maps)
    eye = torch.eye(N)

    def chain(layers: list[Tensor], left_to_right: bool = False) -> Tensor:
        out = layers[0]
        for a in layers[1:]:
            out = out @ a if left_to_right else a @ out
        return out

    mean = [m.mean(1) for m in maps]
    half = [0.5 * a + 0.5 * eye for a in mean]
    unnormalized = [a + eye for a in mean]
    mistakes = [
        (
            chain(mean),
            "you forgot the residual connection: mix each layer's map with the "
            "identity, 0.5 * A + 0.5 * I, before multiplying",
        ),
        (
            chain(half, left_to_right=True),
            "wrong order: the first layer acts first, so it "
            "stands on the RIGHT: R = A_L @ ... @ A_2 @ A_1",
        ),
        (
            chain(unnormalized),
            "A + I has rows that sum to 2: renormalize each row (or use "
            "0.5 * A + 0.5 * I) so the rollout stays a mixing matrix",
        ),
        (
            chain([0.5 * m[:, 0] + 0.5 * eye for m in maps]),
            "you used head 0 only: average over the heads (dim=1) first",
        ),
        (
            chain([0.5 * m.amax(1) + 0.5 * eye for m in maps]),
            "you took the max over heads: rollout averages the heads (dim=1)",
        ),
    ]
    _diagnose(got, expected, mistakes, what)
    _ok("attention_rollout: correct, rows sum to 1, first layer on the right")


# --------------------------------------------------------------------------- CAM, CAT-KD


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


# --------------------------------------------------------------------------- AFD / AFT-KD


def check_decay_weights(fn: Callable[[float, float, float, float], Any]) -> None:
    """Check ``fn(loss_ce, loss_afd, initial_ce, initial_afd) -> (alpha, beta)``.

    The reference is :func:`atcourse.distill.aft.loss_decay_weights` (AFT-KD's Eq. (4) in
    notebook 05): Dr = L / L^0 per term, alpha = Dr_CE / mean(Dr), beta = Dr_AFD / mean(Dr).
    """
    from .distill import loss_decay_weights

    what = "decay weights"
    cases = [(1.0, 0.8, 2.0, 1.0), (0.3, 0.9, 2.3, 1.2), (0.5, 0.25, 1.0, 0.5)]
    for case in cases:
        ce, afd, ce0, afd0 = case
        got = _call(fn, *case)
        try:
            alpha, beta = (float(v) for v in got)
        except (TypeError, ValueError):
            raise ExerciseError(
                f"{what}: return two numbers (alpha, beta), got {type(got).__name__} {got!r}"
            ) from None
        ref = loss_decay_weights({"ce": ce, "afd": afd}, {"ce": ce0, "afd": afd0})
        expected = torch.tensor([ref["ce"], ref["afd"]])
        rates = torch.tensor([ce / ce0, afd / afd0])
        raw = torch.tensor([ce, afd])
        _diagnose(
            torch.tensor([alpha, beta]),
            expected,
            [
                (
                    rates,
                    "you returned the decay rates themselves: divide each by their mean "
                    "(Dr_CE + Dr_AFD) / 2, so that alpha + beta = 2",
                ),
                (
                    rates / rates.sum(),
                    "you divided by the sum of the rates; the formula divides by their mean, "
                    "(Dr_CE + Dr_AFD) / 2, so alpha + beta = 2, not 1",
                ),
                (
                    # with two terms, inverting the rates is the same as swapping the weights
                    expected.flip(0),
                    "alpha and beta are swapped, or the rates inverted: Dr = L / L^0 (the "
                    "current loss over the first epoch's), alpha = Dr_CE / mean and beta = "
                    "Dr_AFD / mean, so the loss that has fallen less weighs more",
                ),
                (
                    raw / raw.mean(),
                    "you used the raw losses; use the decay rates L / L^0, which do not "
                    "depend on each loss's scale",
                ),
            ],
            what + f" for L = ({ce}, {afd}), L^0 = ({ce0}, {afd0})",
        )
    _ok("decay weights: correct; alpha + beta = 2 and the slower-falling loss weighs more")


def check_attentional_feature_block(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(preact [B, C, H, W], weight [K, C], labels [B]) -> AFB [B, C, H, W]``.

    The reference is :func:`atcourse.distill.aft.attentional_feature_block` with its
    defaults: the CAM of each image's label from the pre-activation features, binarized
    above its mean absolute value, added to every channel of ReLU(PreF).
    """
    from .distill.afb import attentional_feature_block, binary_mask, class_maps
    from .distill.cam import class_activation_maps

    what = "attentional feature block"
    B, C, K, H, W = 3, 4, 5, 4, 4
    pre = _inputs(B, C, H, W, seed=11, scale=1.0)
    weight = _inputs(K, C, seed=12, scale=1.0)
    labels = torch.tensor([3, 0, 4])
    got = _as_tensor(_call(fn, pre, weight, labels), what)
    if got.shape == (B, C + 1, H, W):
        raise ExerciseError(
            f"{what}: shape {list(got.shape)}: you stacked the mask as an extra channel; "
            "Eq. (2) adds it to every channel (broadcast [B, 1, H, W] over C)"
        )
    if got.shape != (B, C, H, W):
        raise ExerciseError(
            f"{what}: expected shape [B, C, H, W] = {[B, C, H, W]}, got {list(got.shape)}"
        )
    expected = attentional_feature_block(pre, weight, labels)
    relu = F.relu(pre)

    def block(features: Tensor, maps_from: Tensor, threshold: str = "mean_abs") -> Tensor:
        cams = class_maps(class_activation_maps(maps_from, weight), labels)
        return features + binary_mask(cams, threshold)

    cams_label = class_maps(class_activation_maps(pre, weight), labels)
    _diagnose(
        got,
        expected,
        [
            (block(pre, pre), "the feature part is ReLU(PreF): apply the ReLU before adding"),
            (
                block(relu, relu),
                "compute the CAM from the pre-activation features PreF, not from ReLU(PreF): "
                "the point of the method is what the ReLU throws away",
            ),
            (
                block(relu, pre, "zero"),
                "binarize above each map's mean absolute value, not above zero",
            ),
            (block(relu, pre, "mean"), "binarize above each map's mean |CAM|, not its mean"),
            (
                relu + cams_label,
                "binarize the class map (1 above its mean |CAM|, else 0) before adding it",
            ),
            (
                relu + binary_mask(class_activation_maps(pre, weight)[:, :1]),
                "you used class 0's map for every image: take the map of each image's label",
            ),
        ],
        what,
    )
    _ok(f"{what}: correct (CAM of the label from PreF, binarized, added to ReLU(PreF))")


# --------------------------------------------------------------------------- explain why

#: Multiple-choice questions: id -> prompt, choices, the correct letter, and feedback for
#: each wrong letter (what that answer gets wrong).
QUESTIONS: dict[str, dict[str, Any]] = {
    "kd_t_squared": {
        "prompt": "Why is Hinton's soft loss multiplied by T**2?",
        "choices": {
            "a": "To keep the soft term's gradients on the same scale whatever T is.",
            "b": "To make the loss positive.",
            "c": "To sharpen the teacher's distribution.",
            "d": "Because KL divergence is measured in nats.",
        },
        "correct": "a",
        "explanation": "The gradient w.r.t. the student's logits is T * (p_S - p_T), and "
        "p_S - p_T shrinks like 1/T^2 for large T: T**2 undoes that, so changing T does "
        "not silently re-weight the soft term against the cross-entropy.",
        "feedback": {
            "b": "KL is already >= 0; a positive factor changes its scale, not its sign.",
            "c": "Sharpening (or softening) is what dividing the logits by T does; T**2 "
            "multiplies the loss afterwards.",
            "d": "The unit does not depend on T; the factor is about gradient scale.",
        },
    },
    "kd_ce_vs_kl": {
        "prompt": "You train with cross-entropy against the teacher's soft targets instead "
        "of KL. What changes?",
        "choices": {
            "a": "The gradients w.r.t. the student.",
            "b": "Only the logged value: it is higher by the teacher's entropy.",
            "c": "Nothing at all.",
            "d": "The optimum: the student now matches the teacher's argmax only.",
        },
        "correct": "b",
        "explanation": "CE(p_T, p_S) = H(p_T) + KL(p_T || p_S), and H(p_T) does not depend "
        "on the student: same gradients, but the logged loss never reaches 0.",
        "feedback": {
            "a": "The extra term, the teacher's entropy, does not depend on the student, so "
            "its gradient is zero.",
            "c": "The logged value differs by the teacher's entropy: a KD curve that does "
            "not approach 0 is the telltale sign.",
            "d": "Both losses are minimized exactly at p_S = p_T.",
        },
    },
    "reduction_bug_silent": {
        "prompt": "Why does nn.KLDivLoss() with its default reduction often go unnoticed "
        "in a KD training script?",
        "choices": {
            "a": "It raises a warning that is easy to ignore.",
            "b": "Training still runs; the soft term is just K times weaker, like a smaller alpha.",
            "c": "It only matters for the teacher.",
            "d": "The default reduction is 'batchmean'.",
        },
        "correct": "b",
        "explanation": "Nothing crashes: the gradient of the KD term is divided by the "
        "number of classes, which silently changes the CE/KD balance.",
        "feedback": {
            "a": "Recent PyTorch warns only that 'mean' does not match the mathematical "
            "definition; the silent part is the scale of the loss, which no error reports.",
            "c": "The teacher gets no gradient at all; the bug scales the student's loss.",
            "d": "The default is 'mean', which divides by B*K.",
        },
    },
    "at_normalize": {
        "prompt": "Why are attention maps divided by their L2 norm before comparing them?",
        "choices": {
            "a": "To speed up training.",
            "b": "So the loss compares where the networks look, not how large their "
            "activations are.",
            "c": "So the maps sum to 1, like probabilities.",
            "d": "To handle student and teacher layers with different channel counts.",
        },
        "correct": "b",
        "explanation": "Activation scales differ between networks and change during "
        "training; without the normalization the loss chases the scale and, as the paper "
        "reports, training fails.",
        "feedback": {
            "a": "It costs a little; it is there for what it compares.",
            "c": "Unit L2 norm is not unit sum; the paper uses the L2 norm.",
            "d": "The channel reduction (sum/mean/max over channels) handles that: the maps "
            "are per position whatever the channel count.",
        },
    },
    "at_channels": {
        "prompt": "How can AT compare a 16-channel student layer with a 32-channel teacher layer?",
        "choices": {
            "a": "A learned 1x1 convolution projects the student's channels.",
            "b": "It cannot; the layers must have the same width.",
            "c": "Each map reduces its channels to one value per position, so only H x W "
            "must agree (and pooling fixes that).",
            "d": "The teacher's extra channels are dropped.",
        },
        "correct": "c",
        "explanation": "F(A) sums (or averages, or maxes) |A|^p over channels: the result "
        "is [H, W] for any C.",
        "feedback": {
            "a": "That is FitNets-style feature matching; AT needs no extra parameters.",
            "b": "Width may differ; the maps are per position.",
            "d": "Every channel contributes to the channel reduction.",
        },
    },
    "at_p": {
        "prompt": "What does a larger p in |A|^p do to the attention map?",
        "choices": {
            "a": "It blurs the map.",
            "b": "It puts more weight on the most active positions (a sharper map).",
            "c": "Nothing once the map is normalized.",
            "d": "It changes the map's spatial size.",
        },
        "correct": "b",
        "explanation": "Raising to a higher power widens the gap between strong and weak "
        "activations; F_max^p is the extreme of that.",
        "feedback": {
            "a": "The opposite: small values shrink relative to large ones.",
            "c": "Normalization removes the overall scale, not the relative contrast that p sets.",
            "d": "The map is [H, W] whatever p is.",
        },
    },
    "grad_create_graph": {
        "prompt": "GradientAT computes the student's input gradient J_S with "
        "create_graph=True. What would go wrong with create_graph=False?",
        "choices": {
            "a": "J_S would be computed in lower precision.",
            "b": "J_S would be a constant with no history: the penalty would send no "
            "gradient to the student's weights.",
            "c": "The teacher's weights would receive gradients.",
            "d": "Nothing: create_graph only saves memory.",
        },
        "correct": "b",
        "explanation": "The penalty depends on the weights only through J_S, so its "
        "gradient is a second derivative, which autograd can take only through a recorded "
        "backward pass (double backprop).",
        "feedback": {
            "a": "create_graph says nothing about the dtype; precision is set by autocast.",
            "c": "J_T is detached whatever create_graph is for the student.",
            "d": "It costs memory, but it is what makes the penalty trainable at all.",
        },
    },
    "lb_seeds": {
        "prompt": "Over 3 seeds, KD scores 83.0 ± 2.6 % and AT 82.1 ± 1.9 % (mean ± sample "
        "std). What can you conclude?",
        "choices": {
            "a": "KD is better than AT on this setting.",
            "b": "Nothing yet: the difference is smaller than the spread between seeds; more "
            "seeds (or paired runs with the same seeds) are needed to rank them.",
            "c": "AT is better, because its results vary less.",
            "d": "The std is noise and can be ignored; only the means matter.",
        },
        "correct": "b",
        "explanation": "A gap of 0.9 points against seed-to-seed spreads of 2 to 3 points is "
        "well within what reshuffling the seeds alone produces; papers report medians or "
        "means of 5 runs for that reason.",
        "feedback": {
            "a": "A higher mean over 3 seeds is not evidence when the std is three times "
            "the difference: another 3 seeds could reverse it.",
            "c": "A smaller spread says the method is steadier, not that it is more accurate.",
            "d": "The std is what tells a real difference from luck.",
        },
    },
    "lb_pick": {
        "prompt": "The teacher is a VGG-13, the student a MobileNetV2 (different families, "
        "different stages). Which transfer is the safest first choice?",
        "choices": {
            "a": "Activation AT on the group outputs.",
            "b": "Hinton KD on the logits.",
            "c": "Gradient AT.",
            "d": "Copying the teacher's attention maps into the student.",
        },
        "correct": "b",
        "explanation": "KD only needs the two networks to share the classes. On CIFAR-100 "
        "(RepDistiller) this pair gets 67.37 % with KD, against 64.60 % alone and 59.40 % "
        "with AT: matching maps position by position between unlike stages hurt.",
        "feedback": {
            "a": "AT pairs stages by position; between unlike architectures the maps do not "
            "correspond, and RepDistiller measured AT below the student alone here.",
            "c": "Gradient AT matches input gradients, costs two to three times a step, and "
            "its gains in the paper were small even between similar networks.",
            "d": "Attention copy needs transformers with the same attention shapes.",
        },
    },
    "lb_cost": {
        "prompt": "Gradient AT costs about 3x the time of plain training per epoch. How do "
        "you compare it fairly with KD on a fixed compute budget?",
        "choices": {
            "a": "Same number of epochs for both: that is what papers do.",
            "b": "Give KD (and the student alone) the same wall-clock time, i.e. more "
            "epochs, and compare at equal cost as well as at equal epochs.",
            "c": "Ignore cost: accuracy is all that counts.",
            "d": "Divide gradient AT's accuracy by 3.",
        },
        "correct": "b",
        "explanation": "Accuracy at equal epochs answers 'which loss teaches more per "
        "epoch'; a user with a budget asks 'which is better for the same time'. The "
        "accuracy-vs-cost figure shows both.",
        "feedback": {
            "a": "Equal epochs hides the cost: a slower method may lose to a cheaper one given "
            "the same time.",
            "c": "On a CPU or a shared GPU the time is the budget.",
            "d": "Accuracy does not scale with time; compare at equal time instead.",
        },
    },
    # --- ViT attention transfer (notebook 06)
    "copy_needs_teacher": {
        "prompt": "Why does an attention-copy student need its teacher at test time?",
        "choices": {
            "a": "Its weights are stored inside the teacher.",
            "b": "In the copied layers its own queries and keys were never used or trained, "
            "so it has no attention pattern of its own there.",
            "c": "The teacher's logits are averaged with the student's.",
            "d": "It does not: the copied maps are saved once after training.",
        },
        "correct": "b",
        "explanation": "Attention maps depend on the image, so they cannot be stored once; the "
        "student only learned to use maps computed by the teacher for each input, and its own "
        "Q and K received no gradient. Attention distillation avoids this: its student "
        "computes the maps itself and runs alone.",
        "feedback": {
            "a": "The student has all its own weights; what it lacks is a trained Q/K.",
            "c": "Only the teacher's attention probabilities are used, never its logits.",
            "d": "Each image has its own attention maps: they are recomputed for every input.",
        },
    },
    "fused_attention_maps": {
        "prompt": "Why does reading a ViT's attention maps cost memory that "
        "F.scaled_dot_product_attention avoids?",
        "choices": {
            "a": "The fused kernel uses lower precision.",
            "b": "The fused kernel computes softmax(QK^T)V block by block and never stores "
            "the (N, N) matrix, which the explicit path must keep (for the hook and for "
            "backward), per head and per layer.",
            "c": "Hooks copy the whole model.",
            "d": "The explicit path stores the queries and keys twice.",
        },
        "correct": "b",
        "explanation": "The maps grow like N^2 per head: 65 tokens give 4,225 numbers per "
        "head and image, 577 tokens (a 24x24 grid) 333,000. The fused kernel keeps only "
        "O(N) statistics per row and recomputes the rest in the backward pass.",
        "feedback": {
            "a": "On a CPU both paths run in float32; the difference is what is stored.",
            "c": "A forward hook only keeps a reference to the module's output.",
            "d": "Both paths keep Q, K and V once; the extra memory is the (N, N) maps.",
        },
    },
    "cat_r1": {
        "prompt": "CAT-KD pools every class activation map to R x R. With R = 1, what does "
        "its loss compare?",
        "choices": {
            "a": "Nothing useful: a 1x1 map has no layout, so the loss is always 0.",
            "b": "The student's and the teacher's bias-free logits (a squared error).",
            "c": "Where the object is, at the coarsest scale.",
            "d": "The activation attention maps of notebook 02.",
        },
        "correct": "b",
        "explanation": "The mean of a class map over the positions is that class's logit "
        "without the bias, so at R = 1 CAT is the MSE of the logits; larger R adds the "
        "coarse layout of the evidence on top of that.",
        "feedback": {
            "a": "A 1x1 map still has a value, the map's mean, and the student's and "
            "teacher's means differ.",
            "c": "One cell cannot say where anything is; it only says how much evidence "
            "there is overall.",
            "d": "AT's maps reduce the channels of a feature tensor and carry no class; CAMs "
            "are per class.",
        },
    },
    "cam_bias": {
        "prompt": "CAT-KD turns the classifier into a 1x1 convolution WITHOUT bias. Why drop "
        "the bias?",
        "choices": {
            "a": "To save parameters.",
            "b": "So that each class's logit is exactly the average of its CAM: a bias is "
            "one number per class that belongs to no position.",
            "c": "Because a bias would make the CAMs negative.",
            "d": "Biases cannot be learned by a 1x1 convolution.",
        },
        "correct": "b",
        "explanation": "With the bias, z_k = mean CAM_k + b_k: part of the decision would "
        "not be in the maps. Without it the maps hold all of it, and transferring them "
        "transfers the decision.",
        "feedback": {
            "a": "K numbers out of hundreds of thousands; that is not the point.",
            "c": "A bias shifts a logit; CAMs are negative wherever the weighted features "
            "are, bias or not.",
            "d": "nn.Conv2d has a bias by default; CAT-KD switches it off on purpose.",
        },
    },
    # --- AFD / AFT-KD (notebook 05)
    "aft_mask_gradient": {
        "prompt": "With gradient='none', the student's binary mask is a constant. What does "
        "the mask part of the AFB loss still do to the student?",
        "choices": {
            "a": "Nothing: a constant contributes no gradient.",
            "b": "It trains the student's classifier to produce the teacher's mask.",
            "c": "It shifts the target of the student's features: where the teacher's mask "
            "is on and the student's is off, ReLU(PreF) is pushed up (and down in the "
            "opposite case).",
            "d": "It makes the loss non-differentiable, so training stops.",
        },
        "correct": "c",
        "explanation": "With AFB = mask + ReLU(PreF), the squared error is "
        "((m_S - m_T) + (r_S - r_T))^2: the mask difference acts as an offset on the "
        "features' target, so the teacher's mask still steers where the student activates.",
        "feedback": {
            "a": "The constant is inside the square, next to the features that do get a "
            "gradient: it changes their target.",
            "b": "No gradient passes the hard step, so the classifier gets none from the mask "
            "(that is what gradient='ste' changes).",
            "d": "The mask is simply a constant; the feature part keeps its gradient.",
        },
    },
    "aft_weights": {
        "prompt": "After some epochs the cross-entropy is at 40% of its first-epoch value and "
        "the AFB loss at 80% of its own. Which term gets the larger weight next epoch?",
        "choices": {
            "a": "The cross-entropy: it is learning faster, so it deserves more weight.",
            "b": "The AFB loss: its decay rate is larger (0.8 vs 0.4), so beta = 0.8 / 0.6.",
            "c": "Both get 1: the weights always sum to 2.",
            "d": "It depends on which loss is numerically larger.",
        },
        "correct": "b",
        "explanation": "beta = 0.8 / ((0.4 + 0.8) / 2) = 1.33 and alpha = 0.67: the weights "
        "move towards the term that has fallen least, as in Dynamic Weight Average.",
        "feedback": {
            "a": "The opposite: a term that falls fast has a small rate L / L^0, hence a small "
            "weight.",
            "c": "They sum to 2, but are equal only when both terms have fallen by the same "
            "factor.",
            "d": "The rates are ratios to each term's own first value, so the raw sizes cancel "
            "(which also means the weights cannot fix a mismatch of scales).",
        },
    },
    "aft_scale": {
        "prompt": "The AFB loss starts 100 times larger than the cross-entropy. What do the "
        "adaptive weights do about it?",
        "choices": {
            "a": "They rescale it to the cross-entropy's size.",
            "b": "Nothing: they depend only on L / L^0, so a constant factor on a loss leaves "
            "them unchanged; the AFB term keeps dominating the gradient.",
            "c": "They set beta to 1/100.",
            "d": "They stop the AFB term until the cross-entropy catches up.",
        },
        "correct": "b",
        "explanation": "Multiplying a loss by c multiplies L and L^0 alike: the rate, and so "
        "the weight, is unchanged. The weights balance speeds, not sizes; the size of each "
        "term is still set by how it is defined (or by a fixed factor).",
        "feedback": {
            "a": "alpha and beta average to 1 whatever the losses' sizes are.",
            "c": "beta comes from the rate L / L^0, which a constant factor does not change.",
            "d": "Both weights stay positive; there is no such switch.",
        },
    },
}


def _question_or_error(question_id: str) -> dict[str, Any]:
    if question_id not in QUESTIONS:
        raise ValueError(
            f"unknown question {question_id!r}; valid ids: {', '.join(sorted(QUESTIONS))}"
        )
    return QUESTIONS[question_id]


def question(question_id: str) -> str:
    """The question's text with its choices (printed, and returned)."""
    q = _question_or_error(question_id)
    lines = [q["prompt"]] + [f"  {k}) {v}" for k, v in q["choices"].items()]
    text = "\n".join(lines)
    print(text)
    return text


def check_choice(question_id: str, answer: str) -> None:
    """Check a multiple-choice answer: a letter (``"b"``, ``"B"`` or ``"b)"`` all work).

    Raises:
        ExerciseError: for a wrong answer, with feedback on that answer; or for a letter
            that is not one of the choices.
        ValueError: for an unknown question id (the message lists the valid ones).
    """
    q = _question_or_error(question_id)
    letter = str(answer).strip().lower().rstrip(").:").strip()
    if letter not in q["choices"]:
        raise ExerciseError(
            f"answer with one of the letters {', '.join(q['choices'])}; got {answer!r}"
        )
    if letter != q["correct"]:
        raise ExerciseError(f"not {letter}): {q['feedback'][letter]}")
    _ok(f"{letter}) is right. {q['explanation']}")
