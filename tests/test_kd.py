"""Hinton KD: kd_loss against hand-computed numbers, its T^2 scaling, and the KD method."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcourse.distill import KD, build_method, kd_loss

LN2 = math.log(2.0)


def test_kd_loss_by_hand_on_2x3_logits():
    # T = 2 halves the logits: row 0's teacher becomes [ln 2, 0, 0] -> p_T = [1/2, 1/4, 1/4]
    # against a uniform student; row 1 the other way round.
    student = torch.tensor([[0.0, 0.0, 0.0], [2 * LN2, 0.0, 0.0]])
    teacher = torch.tensor([[2 * LN2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # KL([1/2, 1/4, 1/4] || [1/3]*3) = 1/2 ln(3/2) + 1/2 ln(3/4) = 1/2 ln(9/8)
    row0 = 0.5 * math.log(9 / 8)
    # KL([1/3]*3 || [1/2, 1/4, 1/4]) = 1/3 ln(2/3) + 2/3 ln(4/3) = 1/3 ln(32/27)
    row1 = math.log(32 / 27) / 3
    expected = 2.0**2 * (row0 + row1) / 2  # T^2 * mean over the batch
    assert kd_loss(student, teacher, T=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    z = torch.randn(5, 7)
    assert kd_loss(z, z.clone(), T=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, torch.randn(5, 7), T=4.0).item() > 0


def test_t_squared_factor_keeps_the_gradient_scale():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)

    def grad(T: float, loss_fn) -> torch.Tensor:
        z = s.clone().requires_grad_(True)
        loss_fn(z, t, T).backward()
        return z.grad

    with_t2 = {T: grad(T, kd_loss).norm().item() for T in (20.0, 40.0)}
    without = {
        T: grad(T, lambda a, b, T: kd_loss(a, b, T) / T**2).norm().item() for T in (20.0, 40.0)
    }
    # With T^2 the gradient is about the same at T = 20 and 40; without it, 4x smaller.
    assert with_t2[40.0] / with_t2[20.0] == pytest.approx(1.0, abs=0.02)
    assert without[20.0] / without[40.0] == pytest.approx(4.0, rel=0.02)
    # High-temperature limit: d/dz_S = T (p_S - p_T) / B -> (centred z_S - z_T) / (K B).
    diff = s - t
    limit = (diff - diff.mean(1, keepdim=True)) / (10 * 4)
    assert torch.allclose(grad(1000.0, kd_loss), limit, atol=1e-4)
    # Explicitly: kd_loss equals T^2 times the plain batch-mean KL.
    T = 3.0
    plain = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    assert kd_loss(s, t, T).item() == pytest.approx(T**2 * plain.item(), rel=1e-5)


def test_kldivloss_mean_reduction_is_k_times_smaller():
    B, K, T = 6, 10, 4.0
    s, t = torch.randn(B, K), torch.randn(B, K)
    with warnings.catch_warnings():  # torch warns that 'mean' is not the KL's definition
        warnings.simplefilter("ignore")
        buggy = nn.KLDivLoss()(F.log_softmax(s / T, 1), F.softmax(t / T, 1)) * T**2
    assert kd_loss(s, t, T).item() == pytest.approx(K * buggy.item(), rel=1e-5)


def test_teacher_logits_are_constants():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    g_s, g_t = torch.autograd.grad(kd_loss(s, t, 4.0), (s, t), allow_unused=True)
    assert g_s is not None and g_s.abs().sum() > 0
    assert g_t is None


def _tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5))


def test_kd_method_total_and_gradients():
    student, teacher = _tiny_net(0), _tiny_net(1)
    method = build_method("kd", student, teacher, alpha=0.7, T=3.0)
    assert isinstance(method, KD) and method.hparams() == {"alpha": 0.7, "T": 3.0}
    images, labels = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    out = method(images, labels)
    assert set(out.loss_terms) == {"ce", "kd"}
    assert out.weights == pytest.approx({"ce": 0.3, "kd": 0.7})
    ce = F.cross_entropy(student(images), labels)
    kd = kd_loss(student(images), teacher(images), 3.0)
    assert out.total.item() == pytest.approx((0.3 * ce + 0.7 * kd).item(), rel=1e-5)
    out.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not method.teacher.training  # frozen teacher stays in eval mode
    method.train()
    assert not method.teacher.training


def test_kd_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="alpha"):
        KD(_tiny_net(0), _tiny_net(1), alpha=1.5)
    with pytest.raises(ValueError, match="T"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), T=0.0)
    with pytest.raises(ValueError, match="needs a teacher"):
        build_method("kd", _tiny_net(0))
