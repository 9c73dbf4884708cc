"""Notebook 06, ViT attention transfer: the attention-distillation loss and attention rollout.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from atcourse.distill import attention_distillation_loss
from atcourse.models import attention_rollout

from ._common import (
    ExerciseError,
    Prediction,
    _as_tensor,
    _call,
    _diagnose,
    _inputs,
    _ok,
    _teacher_gets_no_grad,
)

__all__ = ["check_attention_distillation_loss", "check_attention_rollout", "COPY_SHARE"]


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

    The reference is :func:`atcourse.models.attention_rollout` with ``residual=0.5``
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


# --------------------------------------------------------------------------- predict, then run


def _copy_share(v: dict[str, float]) -> str:
    copy_gain = v["attn_copy"] - v["scratch"]
    if copy_gain <= 0:
        return "none"
    finetune_gain = v["fine-tune"] - v["scratch"]
    return "most" if finetune_gain <= 0 or copy_gain / finetune_gain > 0.5 else "some"


def _copy_measured(v: dict[str, float]) -> str:
    line = (
        f"test accuracy: scratch {v['scratch']:.1f}%, fine-tune {v['fine-tune']:.1f}%, "
        f"attention copy {v['attn_copy']:.1f}%"
    )
    finetune_gain = v["fine-tune"] - v["scratch"]
    if finetune_gain <= 0:
        return line + "; fine-tuning gained nothing over scratch in this run"
    return line + f"; copy reached {(v['attn_copy'] - v['scratch']) / finetune_gain:.0%} of "
    "fine-tuning's gain"


COPY_SHARE = Prediction(
    prompt="The teacher never saw the student's classes, and attention copy gives the "
    "student nothing but the teacher's attention maps: it learns its patch embedding, "
    "values, MLPs and classifier itself. What share of fine-tuning's gain over training from "
    "scratch (in test accuracy) will attention copy reach?",
    choices={
        "most": "more than half of fine-tuning's gain",
        "some": "some, up to half of it",
        "none": "none: the copy student ends at or below scratch",
    },
    observed=("scratch", "fine-tune", "attn_copy"),
    decide=_copy_share,
    measured=_copy_measured,
    why={
        "most": "How information should flow between patches, which the maps encode, is a "
        "large part of what pre-training taught the teacher, even on shapes it never saw: "
        "with the routing given, the student only learns what to compute. The paper found "
        "the same on ImageNet. The price: the teacher runs at inference too.",
        "some": "The maps carry part of what pre-training taught, not the features: the copy "
        "student must still learn its values and MLPs from nothing within the same budget, "
        "while fine-tuning starts with them. A longer run closes part of that gap.",
        "none": "The teacher's maps did not help within this budget. After a single epoch "
        "(smoke) no student has left chance; after a longer run it means the teacher's "
        "routing, learned on other shapes, did not suit the new classes, or the student had "
        "too few steps to learn to use it.",
    },
)
