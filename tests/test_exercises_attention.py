"""Notebook 02's checkers: the attention map and the AT loss, code form and paper form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from exercise_helpers import accepts, rejects

from atcourse import exercises as ex
from atcourse.distill import at_loss, attention_map


def test_check_attention_map(capsys):
    accepts(ex.check_attention_map, lambda x, p: attention_map(x, p), capsys)
    rejects(
        ex.check_attention_map, lambda x, p: x.abs().pow(p).mean(1), "not normalized per sample"
    )
    rejects(
        ex.check_attention_map,
        lambda x, p: F.normalize(x.abs().pow(p).mean(2).flatten(1), dim=1).view(2, 3, 5),
        "wrong output shape",
        "[B,H,W]",
        "wrong dimension",
    )
    rejects(
        ex.check_attention_map,
        lambda x, p: F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1),
        "wrong output shape",
        "flattened",
    )

    def signed_power(x, p):
        m = x.pow(p).mean(1)
        return F.normalize(m.flatten(1), dim=1).view_as(m)

    rejects(ex.check_attention_map, signed_power, "absolute value")


def test_check_at_loss(capsys):
    accepts(ex.check_at_loss, lambda s, t: at_loss(s, t), capsys)

    def unnormalized(s, t):
        return (s.pow(2).mean(1) - t.detach().pow(2).mean(1)).pow(2).mean()

    def paper_form(s, t):
        return at_loss(s, t, mode="paper")

    def summed(s, t):
        return at_loss(s, t) * s.shape[-1] * s.shape[-2]

    def not_detached(s, t):
        a = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
        b = F.normalize(t.pow(2).mean(1).flatten(1), dim=1)
        return (a - b).pow(2).mean()

    def raw_features(s, t):
        return (s - t.detach()).pow(2).mean()

    rejects(ex.check_at_loss, unnormalized, "normalize each map")
    rejects(ex.check_at_loss, paper_form, "Eq. 2", "squared")
    rejects(ex.check_at_loss, summed, "summed over positions")
    rejects(ex.check_at_loss, not_detached, "detach")
    rejects(ex.check_at_loss, raw_features, "channels")


def test_check_at_loss_paper(capsys):
    accepts(ex.check_at_loss_paper, lambda s, t: at_loss(s, t, mode="paper"), capsys)

    def maps(s, t, normalize=True):
        if s.shape[-2:] != t.shape[-2:]:  # pool the larger features, as at_loss does
            size = tuple(min(a, b) for a, b in zip(s.shape[-2:], t.shape[-2:]))
            s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
        a = attention_map(s, normalize=normalize).flatten(1)
        b = attention_map(t.detach(), normalize=normalize).flatten(1)
        return a, b

    def squared(s, t):
        a, b = maps(s, t)
        return (a - b).pow(2).sum(1).mean()

    def summed(s, t):
        a, b = maps(s, t)
        return (a - b).norm(dim=1).sum()

    def unnormalized(s, t):
        a, b = maps(s, t, normalize=False)
        return (a - b).norm(dim=1).mean()

    def l1(s, t):
        a, b = maps(s, t)
        return (a - b).abs().sum(1).mean()

    def same_size_only(s, t):  # right on equal grids, crashes on 8x8 against 4x4
        return (attention_map(s) - attention_map(t.detach())).flatten(1).norm(dim=1).mean()

    def pools_the_map(s, t):
        size = t.shape[-2:]
        a = F.adaptive_avg_pool2d(attention_map(s, normalize=False)[:, None], size)[:, 0]
        a = F.normalize(a.flatten(1), dim=1)
        return (a - attention_map(t.detach()).flatten(1)).norm(dim=1).mean()

    def upsamples_the_teacher(s, t):
        t = F.interpolate(t.detach(), size=s.shape[-2:], mode="nearest")
        return (attention_map(s) - attention_map(t)).flatten(1).norm(dim=1).mean()

    def not_detached(s, t):
        if s.shape[-2:] != t.shape[-2:]:
            s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        return (attention_map(s) - attention_map(t)).flatten(1).norm(dim=1).mean()

    rejects(ex.check_at_loss_paper, lambda s, t: at_loss(s, t), "code form", "L2 norm")
    rejects(ex.check_at_loss_paper, squared, "squared the norm")
    rejects(ex.check_at_loss_paper, summed, "do not sum")
    rejects(ex.check_at_loss_paper, unnormalized, "normalize each map")
    rejects(ex.check_at_loss_paper, l1, "L1 norm")
    rejects(ex.check_at_loss_paper, same_size_only, "8x8", "adaptive_avg_pool2d")
    rejects(ex.check_at_loss_paper, pools_the_map, "pool its features")
    rejects(ex.check_at_loss_paper, upsamples_the_teacher, "upsampled")
    rejects(ex.check_at_loss_paper, not_detached, "detach")
    rejects(ex.check_at_loss_paper, lambda s, t: torch.ones(s.shape[0]), "average over the batch")
