"""Every loss and map computes in its input's dtype, never below float32.

In float64 each is compared with the reference implementations' formulas, written out here
independently (the attention-transfer repository's ``at``/``at_loss``, mdistiller's and
RepDistiller's KD, CAT-KD's ``CAT_loss``, Li et al.'s attention cross-entropy), to 1e-12.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcourse.distill import (
    GradientAT,
    afb_loss,
    at_loss,
    attention_distillation_loss,
    attention_map,
    cat_loss,
    class_activation_maps,
    gradient_at_loss,
    input_gradient,
    kd_loss,
)
from atcourse.distill.base import at_least_fp32

D = torch.float64


def _randn(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_at_least_fp32_upcasts_only_narrow_floats():
    assert at_least_fp32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=torch.float16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=D)).dtype == D
    assert at_least_fp32(torch.ones(2, dtype=torch.long)).dtype == torch.long


def test_kd_loss_in_float64_equals_the_reference_formula():
    s, t = _randn(8, 10, seed=1), _randn(8, 10, seed=2)
    T = 4.0
    # mdistiller / RepDistiller: KLDiv(log_softmax(s/T), softmax(t/T), sum) / B * T^2
    p_t = F.softmax(t / T, dim=1)
    ref = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum() / s.shape[0] * T * T
    got = kd_loss(s, t, T)
    assert got.dtype == D and torch.allclose(got, ref, rtol=0, atol=1e-12)


def _at_reference(x: torch.Tensor) -> torch.Tensor:
    # the attention-transfer repository: F.normalize(x.pow(2).mean(1).view(B, -1))
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_at_loss_in_float64_equals_the_reference_formula(mode):
    s, t = _randn(4, 3, 8, 8, seed=3), _randn(4, 5, 8, 8, seed=4)
    d = _at_reference(s) - _at_reference(t)
    ref = d.pow(2).mean() if mode == "code" else d.norm(p=2, dim=1).mean()
    got = at_loss(s, t, mode=mode)
    assert got.dtype == D and torch.allclose(got, ref, rtol=0, atol=1e-12)
    assert attention_map(s).dtype == D


def test_cat_loss_in_float64_equals_the_reference_formula():
    s, t = _randn(2, 10, 8, 8, seed=5), _randn(2, 10, 8, 8, seed=6)
    # CAT-KD's CAT_loss: adaptive_avg_pool2d to R, (optional normalize), mse_loss
    ref = F.mse_loss(F.adaptive_avg_pool2d(s, 2), F.adaptive_avg_pool2d(t, 2))
    got = cat_loss(s, t, pool=2)
    assert got.dtype == D and torch.allclose(got, ref, rtol=0, atol=1e-12)
    w = _randn(10, 3, seed=7)
    cams = class_activation_maps(_randn(2, 3, 4, 4, seed=8), w)
    assert cams.dtype == D


def test_attention_distillation_loss_in_float64_equals_cross_entropy_minus_entropy():
    s, t = _randn(2, 3, 5, 5, seed=9), _randn(2, 3, 5, 5, seed=10)
    p = F.softmax(t, dim=-1)
    cross_entropy = -(p * F.log_softmax(s, dim=-1)).sum(-1).mean()  # Li et al.'s loss
    entropy = -(p * p.log()).sum(-1).mean()
    got = attention_distillation_loss(s, t)
    assert got.dtype == D and torch.allclose(got, cross_entropy - entropy, rtol=0, atol=1e-12)


def test_afb_loss_keeps_float64_and_lifts_bf16():
    a, b = _randn(2, 4, 3, 3, seed=11), _randn(2, 4, 3, 3, seed=12)
    assert afb_loss(a, b).dtype == D
    assert afb_loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32


class _SmallNet(nn.Module):
    """A conv net without batch norm (the paper's setting for gradient AT)."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def test_gradient_at_runs_in_float64_with_a_float64_model():
    student, teacher = _SmallNet(0).double(), _SmallNet(1).double()
    images, labels = _randn(3, 3, 6, 6, seed=13), torch.tensor([0, 1, 2])
    j = input_gradient(student, images, labels)
    assert j.dtype == D
    x = images.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.cross_entropy(student(x), labels, reduction="sum"), x)
    assert torch.allclose(j, ref, rtol=0, atol=1e-12)
    penalty, logits = gradient_at_loss(student, teacher, images, labels)
    assert penalty.dtype == D and logits.dtype == D
    out = GradientAT(student, teacher, beta=1.0)(images, labels)  # once raised: images.float()
    assert out.total.dtype == D
    out.total.backward()
    assert all(p.grad.dtype == D for p in student.parameters())
