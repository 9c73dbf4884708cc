"""The one contract every method follows.

A method ("distiller") is an ``nn.Module`` that owns the student, an optional frozen
teacher and its own hyperparameters. Its forward takes a batch and returns a
:class:`DistillOutput`: the student's logits, the named loss terms with the weights that
combine them, and diagnostics (quantities a method only reports). The trainer sums nothing
itself: it back-propagates ``out.total``, logs every term and diagnostic by name, and stops
a run whose loss terms become NaN; a diagnostic is never summed and never stops a run.
State a method keeps across epochs lives in the method and is updated through
:meth:`Distiller.on_epoch_end`; it is saved with checkpoints through
``get_extra_state``/``set_extra_state``. A method declares its knobs (:attr:`Distiller.knobs`)
next to its code, and registers under a name (:func:`atcourse.distill.register`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from .teacher_cache import TeacherCache

__all__ = ["DistillOutput", "Distiller", "Baseline", "freeze", "at_least_fp32"]


@dataclass
class DistillOutput:
    """What a method's forward returns.

    Attributes:
        logits: the student's logits, [B, K] (the trainer measures accuracy on them).
        loss_terms: unweighted loss terms by name, each a scalar tensor.
        weights: the weight of each term in the total (a missing name weighs 1).
        diagnostics: what the method only reports (per-layer distances, mask agreement),
            scalars by name: logged, never summed into the total, never able to stop a run.
    """

    logits: Tensor
    loss_terms: dict[str, Tensor]
    weights: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """sum_k weights[k] * loss_terms[k], the quantity that is back-propagated."""
        terms = iter(self.loss_terms.items())
        name, value = next(terms)
        total = self.weights.get(name, 1.0) * value
        for name, value in terms:
            total = total + self.weights.get(name, 1.0) * value
        return total


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is in a narrower float type (bf16, fp16), else as it is.

    Losses and maps compute in their input's precision, but never below fp32: reductions
    over many terms in bf16's 8-bit mantissa lose the digits the loss is made of, while a
    float64 input stays float64 (the parity tests compare in float64).
    """
    return x.to(torch.promote_types(x.dtype, torch.float32)) if x.is_floating_point() else x


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: how a teacher is held."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


class Distiller(nn.Module):
    """Base class: a student, an optional frozen teacher, and a loss.

    Subclasses implement :meth:`forward` (images, labels) -> :class:`DistillOutput` and
    may override :meth:`predict` (inference) and :meth:`on_epoch_end`.
    """

    #: short name used in run records and tables ("baseline", "kd", "at", ...)
    name = "distiller"
    #: the method's knobs: configuration name -> Param (the default is the constructor's)
    knobs: ClassVar[dict[str, Param]] = {}
    #: whether a training step back-propagates through a gradient (double backward), which
    #: ``torch.compile`` does not support
    double_backward: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None):
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None
        #: set by the trainer while it trains this method (see :meth:`teacher_outputs`)
        self.teacher_cache: TeacherCache | None = None

    def teacher_outputs(
        self,
        names: Sequence[str],
        compute: Callable[[], dict[str, Tensor]],
        *,
        inference: bool = True,
    ) -> dict[str, Tensor]:
        """What the frozen teacher gives for this batch: ``compute()``, or its stored result.

        A method asks for its teacher's outputs here, by names that say everything the
        values depend on besides the teacher and the batch (``"logits"``,
        ``"at_map/group0/32x32/p2/mean"``). While the trainer trains the method, outputs a
        student of the same setting computed for the same batch before come from its
        :class:`~atcourse.distill.teacher_cache.TeacherCache`; otherwise ``compute`` runs,
        in inference mode (``inference=False`` for outputs that need autograd, such as an
        input gradient), and what it returns is kept for the next student.

        Returns:
            ``{name: tensor}`` for ``names``; plain tensors (not inference tensors), so the
            loss may save them for its backward pass.
        """
        cache = self.teacher_cache
        if cache is not None:
            stored = cache.get(names)
            if stored is not None:
                return stored
        with torch.inference_mode(inference):
            computed = compute()
        # inference tensors cannot be saved for backward; a copy of a target is cheap
        outputs = {n: computed[n].clone() if inference else computed[n].detach() for n in names}
        if cache is not None:
            cache.put(outputs)
        return outputs

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # a teacher never leaves eval mode (batch-norm statistics)
        return self

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement forward(images, labels)")

    def predict(self, images: Tensor) -> Tensor:
        """Logits used for evaluation; the student alone unless a method needs more."""
        return self.student(images)

    def on_epoch_end(self, epoch: int, summary: dict[str, float]) -> None:
        """Called by the trainer after each epoch with that epoch's mean loss terms.

        ``summary`` maps each loss term's name, as the method returned it (``"ce"``,
        ``"afd"``), to its mean over the epoch.
        """

    def hparams(self) -> dict[str, Any]:
        """The method's hyperparameters, as stored in run records."""
        return {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, Tensor]:
        """state_dict without the frozen teacher (what checkpoints store)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint does not fit {type(self).__name__}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )


class Baseline(Distiller):
    """Plain training: cross-entropy and no teacher (the 'student alone' row)."""

    name = "baseline"
    knobs: ClassVar[dict[str, Param]] = {
        "label_smoothing": Param(float, "label smoothing of the cross-entropy", min=0.0, max=1.0)
    }

    def __init__(self, student: nn.Module, *, label_smoothing: float = 0.0):
        super().__init__(student)
        self.label_smoothing = label_smoothing

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        logits = self.student(images)
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return DistillOutput(logits, {"ce": ce}, {"ce": 1.0})

    def hparams(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}
