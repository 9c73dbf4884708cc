"""Notebook 03, gradient-based AT: the input gradient and the flip-invariance penalty.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from atcourse.distill import flip_invariance_loss, input_gradient

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
    _smallest,
)

__all__ = ["check_input_gradient", "check_flip_penalty", "GRADIENT_DISTANCE"]


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


# --------------------------------------------------------------------------- predict, then run


_STUDENTS = {"baseline": "alone", "gradient_at": "gradient AT", "at": "activation AT"}

GRADIENT_DISTANCE = Prediction(
    prompt="Gradient AT trains the student's input gradient J = dCE/dx to match the "
    "teacher's; activation AT matches feature maps and never looks at a gradient. After "
    "training, over the test set (section 5), whose input gradient will be closest to the "
    "teacher's (the smallest mean ||J - J_T||)?",
    choices={
        "gradient_at": "the gradient-AT student",
        "at": "the activation-AT student",
        "baseline": "the student alone: neither method brings it closer",
    },
    observed=tuple(_STUDENTS),
    decide=lambda v: _smallest(v, tuple(_STUDENTS)),
    measured=lambda v: (
        "mean ||J - J_T|| per test image: "
        + ", ".join(f"{label} {v[name]:.3f}" for name, label in _STUDENTS.items())
    ),
    why={
        "gradient_at": "The penalty minimises exactly this distance, so its student ends "
        "closest. Part of a small distance can also be a student that barely reacts to its "
        "input: small gradients everywhere are close to any small J_T.",
        "at": "A student that looks where the teacher looks also reacts to the same pixels: "
        "matching feature maps brings the input gradients along while the student learns its "
        "task. Gradient AT's target is a sharp, pixel-level one, and its penalty, whose "
        "gradient has the same size however close the two already are, holds its student "
        "near the initial plateau (section 6).",
        "baseline": "Neither method brought the gradient closer than training alone. After "
        "an epoch or two (smoke) every student is still near its initialisation and the "
        "distances differ by little; the penalties' effect needs a longer run.",
    },
)
