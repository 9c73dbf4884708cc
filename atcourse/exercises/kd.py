"""Notebook 01, Hinton KD: the softmax with temperature, the KD loss, the reduction bug.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atcourse.distill import kd_loss

from ._common import (
    ExerciseError,
    Prediction,
    _as_tensor,
    _call,
    _close,
    _diagnose,
    _inputs,
    _ok,
    _require_scalar,
    _teacher_gets_no_grad,
)

__all__ = ["check_softmax_T", "check_kd_loss", "check_reduction_bug", "KD_AGAINST_ALONE"]


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


# --------------------------------------------------------------------------- predict, then run


def _kd_against_alone(v: dict[str, float]) -> str:
    accuracy = v["kd_accuracy"] > v["baseline_accuracy"]
    agreement = v["kd_agreement"] > v["baseline_agreement"]
    if accuracy and agreement:
        return "both"
    return "accuracy" if accuracy else "agreement" if agreement else "neither"


KD_AGAINST_ALONE = Prediction(
    prompt="Same architecture, same epochs: one student learns from the labels alone, one "
    "with KD. How will the KD student compare with the student alone, in test accuracy and "
    "in top-1 agreement with the teacher (the share of test images where the student's top "
    "class is the teacher's)?",
    choices={
        "both": "higher accuracy and higher agreement",
        "agreement": "higher agreement, but not higher accuracy",
        "accuracy": "higher accuracy, but not higher agreement",
        "neither": "higher in neither",
    },
    observed=("kd_accuracy", "baseline_accuracy", "kd_agreement", "baseline_agreement"),
    decide=_kd_against_alone,
    measured=lambda v: (
        f"test accuracy: KD {v['kd_accuracy']:.1f}%, alone "
        f"{v['baseline_accuracy']:.1f}%; agreement with the teacher: KD {v['kd_agreement']:.1f}%, "
        f"alone {v['baseline_agreement']:.1f}%"
    ),
    why={
        "both": "The soft targets carry the teacher's ranking of every class, a richer signal "
        "than one label, so the student learns both to answer right and to answer like the "
        "teacher. With a teacher far above the student alone both move; with a teacher "
        "barely better, or after a few epochs, a seed can decide the accuracy.",
        "agreement": "KD's soft term measures closeness to the teacher's outputs, not to the "
        "labels, so agreement is what it moves first. Accuracy follows only where the "
        "teacher is right and the student alone is not; on a short run, or with one seed, "
        "a small gain in accuracy can stay hidden.",
        "accuracy": "An unusual outcome: KD optimises closeness to the teacher, yet here the "
        "agreement did not rise. A teacher that is itself weak (the smoke profile trains it "
        "for two epochs) makes agreeing with it worth little; otherwise look at the spread "
        "over seeds before reading anything into it.",
        "neither": "KD did not help in this run. A barely trained teacher (the smoke "
        "profile's) has little to pass on, and a run of an epoch or two is too short for the "
        "soft term to matter; at the lab profile's budget KD usually lifts both.",
    },
)
