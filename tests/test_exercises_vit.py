"""Notebook 06's checkers: the attention-distillation loss and attention rollout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from exercise_helpers import accepts, rejects

from atcourse import exercises as ex
from atcourse.distill import attention_distillation_loss
from atcourse.models import attention_rollout


def test_check_attention_distillation_loss(capsys):
    check = ex.check_attention_distillation_loss
    accepts(check, attention_distillation_loss, capsys)

    def kl(s, t, dim=-1, detach=True):
        log_q = F.log_softmax(s, dim)
        log_p = F.log_softmax(t.detach() if detach else t, dim)
        return log_p.exp() * (log_p - log_q)

    def cross_entropy(s, t):
        p = F.softmax(t.detach(), -1)
        return -(p * F.log_softmax(s, -1)).sum(-1).mean()

    def batchmean(s, t):
        return kl(s, t).sum() / s.shape[0]

    def by_columns(s, t):
        return kl(s, t, dim=-2).sum(-2).mean()

    def reverse(s, t):
        return kl(t.detach(), s).sum(-1).mean()

    rejects(check, cross_entropy, "teacher's entropy")
    rejects(check, batchmean, "heads and the queries")
    rejects(check, lambda s, t: kl(s, t).mean(), "averaged over the keys")
    rejects(check, by_columns, "dim=-2")
    rejects(check, reverse, "reverse direction")
    rejects(check, lambda s, t: kl(s, t, detach=False).sum(-1).mean(), "detach")
    rejects(check, lambda s, t: kl(s, t).sum(-1), "scalar", "one value per row")


def test_check_attention_rollout(capsys):
    check = ex.check_attention_rollout
    accepts(check, attention_rollout, capsys)

    def rollout(maps, residual=True, first_on_right=True, heads="mean", renormalize=True):
        out = None
        for layer in maps:
            a = layer.mean(1) if heads == "mean" else layer[:, 0]
            if residual:
                a = a + torch.eye(a.shape[-1])
                if renormalize:
                    a = a / a.sum(-1, keepdim=True)
            out = a if out is None else (a @ out if first_on_right else out @ a)
        return out

    accepts(check, rollout, capsys)  # 0.5 A + 0.5 I is (A + I) renormalized
    rejects(check, lambda maps: rollout(maps, residual=False), "residual")
    rejects(check, lambda maps: rollout(maps, first_on_right=False), "wrong order")
    rejects(check, lambda maps: rollout(maps, renormalize=False), "renormalize")
    rejects(check, lambda maps: rollout(maps, heads="first"), "head 0")
    rejects(check, lambda maps: rollout(maps)[:, 0], "expected shape")
