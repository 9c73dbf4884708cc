"""Notebook 03's checkers: the input gradient and the flip-invariance penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from exercise_helpers import accepts, rejects

from atcourse import exercises as ex


def _grad(model, images, labels, reduction="sum", sign=1.0):
    x = images.detach().requires_grad_(True)
    loss = sign * F.cross_entropy(model(x), labels, reduction=reduction)
    return torch.autograd.grad(loss, x)[0]


def test_check_input_gradient(capsys):
    from atcourse.distill import input_gradient

    accepts(ex.check_input_gradient, input_gradient, capsys)
    rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y, "mean"), "too small", "sum")
    rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y, sign=-1.0), "sign")
    rejects(ex.check_input_gradient, lambda m, x, y: _grad(m, x, y)[:, 0], "shape")

    def in_place(model, images, labels):  # differentiates the caller's tensor itself
        if not images.requires_grad:
            images = images.detach().requires_grad_(True)
        F.cross_entropy(model(images), labels, reduction="sum").backward()
        return images.grad

    rejects(ex.check_input_gradient, in_place, ".grad")


def test_check_flip_penalty(capsys):
    from atcourse.distill import flip_invariance_loss, input_gradient

    accepts(ex.check_flip_penalty, lambda m, x, y: flip_invariance_loss(m, x, y, False), capsys)

    def penalty(flip_back=True, dims=(-1,), reduce="mean"):
        def fn(model, images, labels):
            J = input_gradient(model, images, labels)
            J_m = input_gradient(model, torch.flip(images, dims=dims), labels)
            diff = J - (torch.flip(J_m, dims=dims) if flip_back else J_m)
            norms = diff.flatten(1).norm(dim=1)
            return norms.mean() if reduce == "mean" else norms.sum()

        return fn

    rejects(ex.check_flip_penalty, penalty(flip_back=False), "flip J(flip(x)) back")
    rejects(ex.check_flip_penalty, penalty(dims=(-2,)), "left to right")
    rejects(ex.check_flip_penalty, penalty(reduce="sum"), "average")
