"""Activation-based AT: maps and losses by hand, pooling, gradients, and the AT methods."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from atcourse.distill import (
    AT,
    ATKD,
    at_loss,
    attention_alignment,
    attention_map,
    attention_maps,
    build_method,
)
from atcourse.distill.attention import CODE_BETA, PAPER_BETA
from atcourse.models import build

# One sample, two channels, 2x2 positions.
A = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[2.0, 1.0], [-1.0, 0.0]]]])
# |A|:  channel 0 [[1, 2], [0, 3]],  channel 1 [[2, 1], [1, 0]]
BY_HAND = {
    (1, "sum"): [[3, 3], [1, 3]],
    (1, "mean"): [[1.5, 1.5], [0.5, 1.5]],
    (1, "max"): [[2, 2], [1, 3]],
    (2, "sum"): [[5, 5], [1, 9]],  # 1+4, 4+1, 0+1, 9+0
    (2, "mean"): [[2.5, 2.5], [0.5, 4.5]],
    (2, "max"): [[4, 4], [1, 9]],
    (4, "sum"): [[17, 17], [1, 81]],  # 1+16, 16+1, 0+1, 81+0
    (4, "mean"): [[8.5, 8.5], [0.5, 40.5]],
    (4, "max"): [[16, 16], [1, 81]],
}


@pytest.mark.parametrize(("p", "reduce"), list(BY_HAND))
def test_attention_map_by_hand(p, reduce):
    expected = torch.tensor([BY_HAND[p, reduce]], dtype=torch.float32)
    got = attention_map(A, p=p, reduce=reduce, normalize=False)
    assert got.shape == (1, 2, 2)
    assert torch.allclose(got, expected)
    normalized = attention_map(A, p=p, reduce=reduce)
    assert torch.allclose(normalized, expected / expected.norm())


def test_attention_map_normalizes_each_sample():
    x = torch.randn(3, 4, 5, 6) * torch.tensor([0.1, 1.0, 10.0]).view(3, 1, 1, 1)
    maps = attention_map(x)
    assert maps.shape == (3, 5, 6)
    assert torch.allclose(maps.flatten(1).norm(dim=1), torch.ones(3), atol=1e-6)
    # Sum and mean differ by the constant C, which the normalization removes.
    assert torch.allclose(attention_map(x, reduce="sum"), maps, atol=1e-6)
    assert (maps >= 0).all()


def test_attention_map_rejects_bad_input():
    with pytest.raises(ValueError, match="reduce"):
        attention_map(A, reduce="median")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        attention_map(torch.randn(2, 16, 8))


def _two_samples():
    # Sample 0: student map [1, 1] -> [1, 1]/sqrt2; teacher map mean_c [4, 0]/2 -> [1, 0].
    # Sample 1: identical maps, difference 0.
    student = torch.tensor([[[[1.0, 1.0]]], [[[1.0, 2.0]]]])  # [2, 1, 1, 2]
    teacher = torch.tensor(
        [[[[2.0, 0.0]], [[0.0, 0.0]]], [[[1.0, 2.0]], [[1.0, 2.0]]]]
    )  # [2, 2, 1, 2]
    return student, teacher


def test_at_loss_code_and_paper_by_hand():
    student, teacher = _two_samples()
    r = 1 / math.sqrt(2)
    sq = (r - 1) ** 2 + r**2  # = 2 - sqrt2, squared L2 distance of sample 0
    assert sq == pytest.approx(2 - math.sqrt(2))
    # code: mean over 2 samples x 2 positions of the squared difference
    assert at_loss(student, teacher, mode="code").item() == pytest.approx(sq / 4, rel=1e-6)
    # paper: mean over the batch of the L2 norm (not squared), no beta/2
    assert at_loss(student, teacher, mode="paper").item() == pytest.approx(
        math.sqrt(sq) / 2, rel=1e-6
    )
    with pytest.raises(ValueError, match="mode"):
        at_loss(student, teacher, mode="both")


def test_at_loss_pools_the_larger_features():
    torch.manual_seed(0)
    big, small = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    pooled = F.adaptive_avg_pool2d(big, 4)
    for mode in ("code", "paper"):
        assert at_loss(big, small, mode=mode).item() == pytest.approx(
            at_loss(pooled, small, mode=mode).item(), rel=1e-6
        )
        assert at_loss(small, big, mode=mode).item() == pytest.approx(
            at_loss(small, pooled, mode=mode).item(), rel=1e-6
        )


def test_at_loss_sends_no_gradient_to_the_teacher():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, requires_grad=True)
    for mode in ("code", "paper"):
        g_s, g_t = torch.autograd.grad(at_loss(s, t, mode=mode), (s, t), allow_unused=True)
        assert g_s is not None and g_s.abs().sum() > 0
        assert g_t is None


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return build("wrn_10_1"), build("wrn_16_1")


BATCH = (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))


def test_at_method_terms(pair):
    student, teacher = copy.deepcopy(pair[0]), copy.deepcopy(pair[1])
    method = build_method("at", student, teacher)
    assert isinstance(method, AT) and method.beta == CODE_BETA
    out = method(*BATCH)
    assert set(out.loss_terms) == {"ce", "at"}
    assert all(torch.isfinite(v) for v in out.loss_terms.values())
    assert out.weights["ce"] == 1.0 and out.weights["at"] == CODE_BETA
    per_layer = list(out.diagnostics)
    assert per_layer == ["at/group0", "at/group1", "at/group2"]
    # Per-layer terms are diagnostics: never summed, and they add up to "at".
    assert sum(out.diagnostics[k] for k in per_layer).item() == pytest.approx(
        out.loss_terms["at"].item(), rel=1e-5
    )
    expected = out.loss_terms["ce"] + CODE_BETA * out.loss_terms["at"]
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    out.total.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_at_is_zero_for_a_copy_of_the_student(pair):
    student = copy.deepcopy(pair[0])
    method = AT(student, copy.deepcopy(student), mode="paper")
    assert method.beta == PAPER_BETA and method.at_weight == PAPER_BETA / 2
    method.eval()  # both in eval mode: the same batch-norm statistics, the same features
    out = method(*BATCH)
    assert out.loss_terms["at"].item() == pytest.approx(0.0, abs=1e-6)


def test_at_plus_kd_has_three_terms(pair):
    method = build_method(
        "at+kd",
        copy.deepcopy(pair[0]),
        copy.deepcopy(pair[1]),
        alpha=0.9,
        T=4.0,
        beta=500.0,
        log_layers=False,
    )
    assert isinstance(method, ATKD)
    out = method(*BATCH)
    assert set(out.loss_terms) == {"ce", "kd", "at"}
    assert out.weights == pytest.approx({"ce": 0.1, "kd": 0.9, "at": 500.0})
    assert method.hparams()["alpha"] == 0.9 and method.hparams()["beta"] == 500.0


def test_at_checks_its_layers_before_freezing_the_teacher(pair):
    student, teacher = pair
    with pytest.raises(ValueError, match="one to one"):
        AT(student, teacher, layers=["group1", "group2"], teacher_layers=["group2"])
    with pytest.raises(KeyError, match="group1"):
        AT(student, teacher, layers=["grup1"])
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_attention_maps_and_alignment(pair):
    model = pair[1]
    images = BATCH[0]
    maps = attention_maps(model, images)
    assert list(maps) == ["group0", "group1", "group2"]
    assert [tuple(m.shape) for m in maps.values()] == [(4, 16, 16), (4, 8, 8), (4, 4, 4)]
    assert model.training  # the mode is restored
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    align = attention_alignment(model, images, masks, layers=["group2"])
    assert list(align) == ["group2"] and align["group2"].shape == (4,)
    assert ((align["group2"] >= 0) & (align["group2"] <= 1)).all()
