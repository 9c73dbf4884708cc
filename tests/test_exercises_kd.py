"""Notebook 01's checkers: softmax with temperature, the KD loss, the reduction bug."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from exercise_helpers import accepts, rejects
from torch import nn

from atcourse import exercises as ex
from atcourse.distill import kd_loss


def test_check_kd_loss(capsys):
    accepts(ex.check_kd_loss, kd_loss, capsys)

    def no_t2(s, t, T):
        return F.kl_div(
            F.log_softmax(s / T, 1), F.softmax(t.detach() / T, 1), reduction="batchmean"
        )

    def mean_reduction(s, t, T):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nn.KLDivLoss()(F.log_softmax(s / T, 1), F.softmax(t.detach() / T, 1)) * T**2

    def soft_ce(s, t, T):
        return -(F.softmax(t.detach() / T, 1) * F.log_softmax(s / T, 1)).sum(1).mean() * T**2

    def not_detached(s, t, T):
        return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T**2

    def per_sample(s, t, T):
        p_t = F.softmax(t / T, 1)
        return (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1) * T**2

    rejects(ex.check_kd_loss, no_t2, "T^2 too small", "T**2")
    rejects(ex.check_kd_loss, mean_reduction, "averaged over classes", "batchmean")
    rejects(ex.check_kd_loss, soft_ce, "cross-entropy with soft targets", "entropy")
    rejects(ex.check_kd_loss, not_detached, "detach")
    rejects(ex.check_kd_loss, per_sample, "average over the batch")


def test_check_softmax_t(capsys):
    accepts(ex.check_softmax_T, lambda z, T: torch.softmax(z / T, dim=1), capsys)
    rejects(ex.check_softmax_T, lambda z, T: torch.softmax(z, dim=1), "ignored T")
    rejects(ex.check_softmax_T, lambda z, T: torch.softmax(z / T, dim=0), "wrong dimension")

    def naive(z, T):
        e = torch.exp(z / T)
        return e / e.sum(1, keepdim=True)

    rejects(ex.check_softmax_T, naive, "overflow", "max")


def test_check_reduction_bug(capsys):
    ex.check_reduction_bug("batchmean", 10)
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(ex.ExerciseError, match="buggy default"):
        ex.check_reduction_bug("mean", 10)
    with pytest.raises(ex.ExerciseError, match="grow with the batch size"):
        ex.check_reduction_bug("sum", 10)
    with pytest.raises(ex.ExerciseError, match="number of classes"):
        ex.check_reduction_bug("batchmean", 128)
    with pytest.raises(ex.ExerciseError, match="accepts reduction"):
        ex.check_reduction_bug("avg", 10)
