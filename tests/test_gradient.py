"""Gradient-based AT: input gradients, double backprop, the flip penalty, the method."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcourse.distill import (
    METHODS,
    GradientAT,
    build_method,
    flip_invariance_loss,
    gradient_at_loss,
    gradient_attention_map,
    hparams_from_config,
    input_gradient,
)
from atcourse.distill.gradient import DEFAULT_BETA
from atcourse.models import build


class TinyConvNet(nn.Module):
    """conv -> tanh -> conv -> tanh -> mean pool -> linear: smooth, so finite differences
    of its input gradient are well defined (no ReLU kinks)."""

    def __init__(self, seed: int, classes: int = 3):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.5

    def forward(self, x):
        x = torch.tanh(self.conv1(torch.tanh(self.conv0(x))))
        return self.fc(x.mean(dim=(2, 3)))


class MirrorAverage(nn.Module):
    """A model that sees (x + flip(x)) / 2: its output cannot change when x is mirrored."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner((x + torch.flip(x, dims=(-1,))) / 2)


def _batch(n=4, size=6, classes=3, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


# ----------------------------------------------------------------------------- input_gradient


def test_input_gradient_of_a_linear_model_is_analytic():
    # logits = W vec(x) + b, so dCE_b/dx_b = W^T (softmax(logits_b) - onehot(y_b)).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x, y = _batch(n=3, size=4, classes=5)
    probs = F.softmax(model(x), dim=1)
    expected = ((probs - F.one_hot(y, 5).float()) @ model[1].weight).view_as(x)
    got = input_gradient(model, x, y)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_input_gradient_matches_autograd_by_hand_whatever_the_input():
    model = TinyConvNet(0)
    x, y = _batch()
    leaf = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(leaf), y, reduction="sum")
    (by_hand,) = torch.autograd.grad(loss, leaf)
    assert torch.allclose(input_gradient(model, x, y), by_hand, atol=1e-6)
    # The input may require grad or not, and the call may sit under no_grad.
    wants_grad = x.clone().requires_grad_(True)
    assert torch.allclose(input_gradient(model, wants_grad, y), by_hand, atol=1e-6)
    assert wants_grad.grad is None
    with torch.no_grad():
        assert torch.allclose(input_gradient(model, x, y), by_hand, atol=1e-6)
    # A frozen network (a teacher) still gives its input gradient, and no parameter grads.
    frozen = TinyConvNet(0).requires_grad_(False)
    assert torch.allclose(input_gradient(frozen, x, y), by_hand, atol=1e-6)
    assert all(p.grad is None for p in frozen.parameters())
    # Per-image gradients: a batch of one gives the same row.
    assert torch.allclose(input_gradient(model, x[1:2], y[1:2])[0], by_hand[1], atol=1e-6)
    # Without create_graph, J is a plain tensor; with it, J depends on the weights.
    assert not input_gradient(model, x, y).requires_grad
    assert input_gradient(model, x, y, create_graph=True).requires_grad


def test_gradient_attention_map_by_hand():
    grad = torch.zeros(1, 3, 2, 2)
    grad[0, 0] = torch.tensor([[1.0, -2.0], [0.0, 0.0]])
    grad[0, 2] = torch.tensor([[-3.0, 0.0], [0.0, 4.0]])
    p1 = gradient_attention_map(grad, p=1, normalize=False)
    assert torch.equal(p1, torch.tensor([[[4.0, 2.0], [0.0, 4.0]]]))
    p2 = gradient_attention_map(grad, p=2, normalize=False)
    assert torch.equal(p2, torch.tensor([[[10.0, 4.0], [0.0, 16.0]]]))
    normalized = gradient_attention_map(grad, p=1)
    assert normalized.shape == (1, 2, 2)
    assert torch.allclose(normalized, p1 / 6.0)  # ||(4, 2, 0, 4)|| = 6


# ----------------------------------------------------------------------------- double backprop


def test_gradient_at_penalty_matches_finite_differences():
    # The penalty's gradient w.r.t. student weights needs the second derivative of CE
    # w.r.t. (weights, input): autograd's double backward against central differences.
    student = TinyConvNet(1).double()
    teacher = TinyConvNet(2).double()
    x, y = _batch(dtype=torch.float64)

    def penalty() -> torch.Tensor:
        return gradient_at_loss(student, teacher, x, y)[0]

    penalty().backward()
    weight = student.conv0.weight
    analytic = weight.grad.flatten()
    eps = 1e-6
    for i in (0, 7, 31, 50, 100):
        with torch.no_grad():
            flat = weight.view(-1)
            flat[i] += eps
            plus = penalty().item()
            flat[i] -= 2 * eps
            minus = penalty().item()
            flat[i] += eps
        numeric = (plus - minus) / (2 * eps)
        assert analytic[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert analytic.abs().sum() > 0


def test_teacher_gets_no_gradient_and_identical_networks_score_zero():
    student, teacher = TinyConvNet(1), TinyConvNet(2)  # the teacher is *not* frozen here
    x, y = _batch()
    loss, logits = gradient_at_loss(student, teacher, x, y)
    assert loss.item() > 0 and logits.shape == (4, 3)
    assert torch.allclose(logits, student(x))
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    same, _ = gradient_at_loss(student, copy.deepcopy(student), x, y)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_flip_penalty_is_zero_only_for_a_mirror_invariant_model():
    x, y = _batch(size=8)
    symmetric = MirrorAverage(TinyConvNet(3))
    assert flip_invariance_loss(symmetric, x, y).item() == pytest.approx(0.0, abs=1e-7)
    plain = TinyConvNet(3)
    loss = flip_invariance_loss(plain, x, y)
    assert loss.item() > 1e-4
    loss.backward()
    assert all(p.grad is not None for p in plain.parameters())
    # By hand: J(x) against the mirror of J at the mirrored image.
    j = input_gradient(plain, x, y)
    j_mirror = torch.flip(input_gradient(plain, torch.flip(x, dims=(-1,)), y), dims=(-1,))
    expected = (j - j_mirror).flatten(1).norm(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def wrns():
    torch.manual_seed(0)
    return build("wrn_10_1"), build("wrn_10_1")


IMAGES = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
LABELS = torch.tensor([0, 1, 2, 3])


def _one_step(method: GradientAT) -> dict[str, torch.Tensor]:
    method.train()
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's autocast, on the CPU
        out = method(IMAGES, LABELS)
    assert out.logits.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.loss_terms.values())
    optimizer.zero_grad()
    out.total.backward()
    for p in method.student.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()
    optimizer.step()
    return out.loss_terms


def test_method_trains_a_step_with_batch_norm_under_autocast(wrns):
    student, teacher = copy.deepcopy(wrns[0]), copy.deepcopy(wrns[1])
    method = build_method("gradient_at", student, teacher)
    assert isinstance(method, GradientAT) and method.beta == DEFAULT_BETA
    before = copy.deepcopy(student.state_dict())
    terms = _one_step(method)
    assert set(terms) == {"ce", "grad_at"}
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    # One student forward: each batch-norm layer counted one batch.
    bn = student.group0[0].bn0
    assert bn.num_batches_tracked.item() == 1
    assert not torch.equal(before["conv0.weight"], student.conv0.weight)


@pytest.mark.parametrize("mode", ["flip", "both"])
def test_flip_modes_train_a_step(wrns, mode):
    student = copy.deepcopy(wrns[0])
    teacher = copy.deepcopy(wrns[1]) if mode == "both" else None
    method = build_method(f"gradient_at_{mode}", student, teacher, beta=4.0, flip_beta=2.0)
    out_weights = method(IMAGES, LABELS).weights
    expected = {"ce": 1.0, "flip": 1.0, **({"grad_at": 2.0} if mode == "both" else {})}
    assert out_weights == expected
    terms = _one_step(method)
    assert set(terms) == set(expected)
    assert student.group0[0].bn0.num_batches_tracked.item() == 2  # one forward per call
    # The logits are those of the images themselves, not of their mirrors.
    method.eval()
    with torch.no_grad():
        plain = student(IMAGES)
    assert torch.allclose(method(IMAGES, LABELS).logits, plain, atol=1e-5)


def test_weights_registry_and_errors(wrns):
    student, teacher = copy.deepcopy(wrns[0]), copy.deepcopy(wrns[1])
    method = GradientAT(student, teacher, beta=6.0)
    out = method(IMAGES, LABELS)
    assert out.weights == {"ce": 1.0, "grad_at": 3.0}  # Section 3.2's beta / 2
    expected = out.loss_terms["ce"] + 3.0 * out.loss_terms["grad_at"]
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert method.hparams() == {"beta": 6.0, "mode": "teacher", "flip_beta": 6.0, "norm": "l2"}

    # each mode is a method of its own, registered the same way
    for name, mode in (("gradient_at", "teacher"), ("gradient_at_flip", "flip"),
                       ("gradient_at_both", "both")):  # fmt: skip
        assert METHODS[name].cls is GradientAT and METHODS[name].fixed == {"mode": mode}
        assert METHODS[name].needs_teacher == (mode != "flip")
        assert METHODS[name].double_backward
    flip_only = build_method("gradient_at_flip", copy.deepcopy(student))
    assert flip_only.teacher is None and flip_only.name == "gradient_at_flip"
    assert GradientAT(copy.deepcopy(student), copy.deepcopy(teacher), mode="flip").teacher is None
    with pytest.raises(ValueError, match="trains without a teacher"):
        build_method("gradient_at_flip", copy.deepcopy(student), copy.deepcopy(teacher))
    with pytest.raises(ValueError, match="fixes mode='teacher'"):
        build_method("gradient_at", copy.deepcopy(student), copy.deepcopy(teacher), mode="flip")
    for mode in ("teacher", "both"):
        with pytest.raises(ValueError, match="needs teacher"):
            GradientAT(copy.deepcopy(student), mode=mode)
    with pytest.raises(ValueError, match="mode must be one of"):
        GradientAT(student, teacher, mode="mirror")
    fresh_teacher = copy.deepcopy(wrns[1]).train()
    with pytest.raises(ValueError, match="beta"):
        GradientAT(student, fresh_teacher, beta=-1.0)
    assert fresh_teacher.training  # a bad argument leaves the teacher as it was
    assert hparams_from_config("gradient_at", {"beta": 8.0}) == {"beta": 8.0}
    # AT's mode knob (at_mode) never reaches gradient AT
    assert hparams_from_config("gradient_at_flip", {"at_mode": "paper", "beta": 1.0}) == {
        "beta": 1.0
    }


def test_the_squared_norm_and_the_monitor(wrns):
    student, teacher = copy.deepcopy(wrns[0]), copy.deepcopy(wrns[1])
    l2 = GradientAT(copy.deepcopy(student), copy.deepcopy(teacher), beta=2.0)
    sq = GradientAT(copy.deepcopy(student), copy.deepcopy(teacher), beta=2.0, norm="squared")
    a, b = l2(IMAGES, LABELS).loss_terms["grad_at"], sq(IMAGES, LABELS).loss_terms["grad_at"]
    assert b.item() == pytest.approx(a.item() ** 2, rel=0.5)  # mean of squares >= square of mean
    with pytest.raises(ValueError, match="norm must be one of"):
        GradientAT(student, teacher, norm="l1")
    watched = GradientAT(student, teacher, beta=2.0, monitor=2)
    reported = [set(watched(IMAGES, LABELS).diagnostics) for _ in range(3)]
    assert reported[1] == set()  # every second training step only
    assert (
        {
            "weight_grad_norm/ce",
            "weight_grad_norm/grad_at",
            "cos_to_teacher/train_bn",
            "cos_to_teacher/eval_bn",
            "input_grad_norm/student",
        }
        <= reported[0]
        == reported[2]
    )
    out = watched.eval()(IMAGES, LABELS)
    assert out.diagnostics == {}  # never in evaluation
    assert hparams_from_config("gradient_at", {"grad_norm": "squared", "grad_monitor": 5}) == {
        "norm": "squared",
        "monitor": 5,
    }
