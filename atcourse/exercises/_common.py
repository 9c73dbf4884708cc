"""What every checker shares: the error it raises, fixed inputs, and the comparison that
turns a wrong number into the name of a likely mistake."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ExerciseError", "Prediction"]


class ExerciseError(AssertionError):
    """A wrong answer to an exercise; the message says what is probably wrong."""


# --------------------------------------------------------------------------- helpers


def _ok(message: str) -> None:
    print(f"✓ {message}")


def _inputs(*shape: int, seed: int, scale: float = 2.0) -> Tensor:
    """Fixed inputs: the same numbers on every machine (CPU generator, float32)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale


def _call(fn: Callable[..., Any], *args: Any, hint: str = "") -> Any:
    """Call the learner's function; a crash becomes an ExerciseError that shows the inputs.

    ``NotImplementedError`` passes through untouched: it is the student edition's stub
    saying the exercise is not done yet, not a wrong answer.
    """
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as err:
        shapes = ", ".join(str(list(a.shape)) if isinstance(a, Tensor) else repr(a) for a in args)
        raise ExerciseError(
            f"your function raised {type(err).__name__}: {err}\n"
            f"(called with {shapes}){' ' + hint if hint else ''}"
        ) from err


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    raise ExerciseError(f"{what} should return a tensor, got {type(value).__name__}")


def _close(a: Tensor, b: Tensor, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=rtol, atol=atol))


def _diagnose(
    got: Tensor, expected: Tensor, mistakes: Sequence[tuple[Tensor, str]], what: str
) -> None:
    """Raise with the message of the first known mistake ``got`` matches, else a generic one."""
    if _close(got, expected):
        return
    for wrong, message in mistakes:
        if _close(got, wrong):
            raise ExerciseError(message)
    if got.numel() == 1 and expected.numel() == 1:
        raise ExerciseError(
            f"{what}: expected {expected.item():.6f}, got {got.item():.6f} "
            f"(ratio {got.item() / expected.item():.4g})"
            if expected.item() != 0
            else f"{what}: expected 0, got {got.item():.6f}"
        )
    err = (got.detach().float() - expected).abs().max().item()
    raise ExerciseError(f"{what}: values differ from the reference (largest difference {err:.3g})")


def _require_scalar(value: Tensor, batch: int, classes_or_positions: int, what: str) -> None:
    if value.dim() == 0 or value.numel() == 1:
        return
    shape = list(value.shape)
    if shape == [batch]:
        raise ExerciseError(
            f"{what} returned one value per sample, shape {shape}: average over the batch "
            "too (the loss is a scalar)"
        )
    if len(shape) == 2 and shape[0] == batch:
        raise ExerciseError(
            f"{what} returned shape {shape}: sum over dim 1 ({classes_or_positions} "
            "entries per sample), then average over the batch, to get a scalar"
        )
    raise ExerciseError(f"{what} should return a scalar (0-d tensor), got shape {shape}")


def _teacher_gets_no_grad(
    fn: Callable[..., Any], student: Tensor, teacher: Tensor, *rest: Any, what: str
) -> None:
    """The teacher is a fixed target: a loss must not send gradients into its outputs."""
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    out = _as_tensor(_call(fn, s, t, *rest), what)
    if not out.requires_grad:
        raise ExerciseError(
            f"{what} is not differentiable w.r.t. the student's input: did you call .item(), "
            "detach the student, or compute it under torch.no_grad()?"
        )
    s_grad, t_grad = torch.autograd.grad(out.sum(), (s, t), allow_unused=True)
    if s_grad is None or not torch.any(s_grad != 0):
        raise ExerciseError(f"{what} sends no gradient to the student: it cannot train it")
    if t_grad is not None and torch.any(t_grad != 0):
        raise ExerciseError(
            f"{what} sends gradients into the teacher's tensor: detach it "
            "(teacher.detach()) so the teacher is a fixed target"
        )


# --------------------------------------------------------------------------- predict, then run


@dataclass(frozen=True)
class Prediction:
    """One predict-then-run question (:mod:`atcourse.exercises.predictions` asks and checks it).

    Attributes:
        prompt: the question, asked before the experiment.
        choices: name -> what predicting it means; the outcomes are the same names.
        observed: the names of the measured values the check needs.
        decide: measured values -> the name of the choice they support.
        measured: measured values -> one line that states them.
        why: outcome -> why the run came out that way, and what would change it.
    """

    prompt: str
    choices: dict[str, str]
    observed: tuple[str, ...]
    decide: Callable[[dict[str, float]], str]
    measured: Callable[[dict[str, float]], str]
    why: dict[str, str]

    def __post_init__(self) -> None:
        if set(self.why) != set(self.choices):
            raise ValueError("a prediction explains every outcome: why and choices differ")


def _largest(values: dict[str, float], names: tuple[str, ...]) -> str:
    return max(names, key=lambda name: values[name])


def _smallest(values: dict[str, float], names: tuple[str, ...]) -> str:
    return min(names, key=lambda name: values[name])


def _percentages(values: dict[str, float], labels: dict[str, str]) -> str:
    return ", ".join(f"{label} {values[name]:.1f}%" for name, label in labels.items())
