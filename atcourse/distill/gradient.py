"""Gradient-based attention transfer (gradient AT) and the flip-invariance penalty.

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017, Section 3.2.

Here the "attention" of a network at an input x is the gradient of its loss with respect to
the input, J = dCE/dx, [B, 3, H, W]: the pixels where a small change would change the
network's answer most. The student is trained so that its input gradient looks like the
teacher's::

    L = CE(W_S, x) + beta / 2 * || J_S - J_T ||_2          (Section 3.2)

J_S is itself a function of the student's weights, so the gradient of this loss needs the
derivative of a derivative ("double backprop"): J_S is computed with
``torch.autograd.grad(..., create_graph=True)``, which records the backward pass as a graph
that ``loss.backward()`` can differentiate again. J_T is a constant target (detached).

The same section proposes a penalty with no teacher: a network whose prediction does not
change when the image is mirrored should have a mirrored input gradient, so

    L = CE + beta / 2 * || J(x) - flip(J(flip(x))) ||_2

pushes the model towards horizontal-flip invariance.

No official code was released for this part of the paper; the details below (per-sample
gradients, the norm averaged over the batch, fp32 for the double backward) are this
package's choices, and each is stated where it is made. A training step costs about three
times a KD or AT step, seven times a plain one, on a 2-core CPU (a forward and two backward
passes, the second through a graph twice the usual size, in fp32; docs/performance.md), and
``torch.compile`` does not support double backward.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from ..runtime import eval_mode
from .attention import attention_map
from .base import Distiller, DistillOutput, at_least_fp32
from .registry import register

__all__ = [
    "input_gradient",
    "gradient_attention_map",
    "gradient_at_loss",
    "flip_invariance_loss",
    "GradientAT",
    "DEFAULT_BETA",
]

_MODES = ("teacher", "flip", "both")

#: Default beta of both penalties (each term weighs beta / 2, as in Section 3.2); see
#: :class:`GradientAT` for how it was chosen.
DEFAULT_BETA = 0.25


def _flip(x: Tensor) -> Tensor:
    """Mirror images (or input gradients) left to right: [B, C, H, W], along W."""
    return torch.flip(x, dims=(-1,))


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which autocast is off for ``device`` (a no-op where it does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _gradient_and_logits(
    model: nn.Module, images: Tensor, labels: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """One forward of ``model`` and the input gradient of its summed cross-entropy.

    Returns (J [B, C, H, W], logits [B, K]). With ``create_graph`` both stay in the graph,
    so a loss built from J can be differentiated with respect to the model's weights.
    """
    # A fresh leaf: the gradient is taken w.r.t. this batch whatever ``images`` was (a leaf
    # without grad, part of another graph, or an input of a frozen teacher).
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        # The sum, not the mean: row b of J is then dCE_b/dx_b, the gradient of image b's own
        # loss, whatever the batch size (the mean would divide every J by B).
        ce_sum = F.cross_entropy(at_least_fp32(logits), labels, reduction="sum")
        (grad,) = torch.autograd.grad(ce_sum, x, create_graph=create_graph)
    return grad, logits


def input_gradient(
    model: nn.Module, images: Tensor, labels: Tensor, create_graph: bool = False
) -> Tensor:
    """J = dCE/dx: the gradient of the cross-entropy with respect to the input images.

    Row b is the gradient of image b's own loss CE(model(x)_b, y_b) (the gradient of the
    batch's summed loss, so it does not shrink with the batch size). The model is used in
    whatever mode it is in: in train mode, batch norm mixes the images of a batch, and row b
    then also carries the small effect of x_b on the other images' losses.

    Args:
        model: any network mapping images to logits; it may be frozen (parameters without
            ``requires_grad``): gradient recording is switched on locally, for the input only.
        images: [B, C, H, W]. A detached copy is differentiated, so whether ``images``
            requires grad does not matter, and no gradient flows back into it.
        labels: [B] class indices.
        create_graph: keep the backward pass in the autograd graph, so that a loss made from
            J can be back-propagated to the model's weights (double backprop). False for a
            target or a figure: J is then a plain tensor.

    Returns:
        J, [B, C, H, W], the dtype of the model's computation.
    """
    grad, _ = _gradient_and_logits(model, images, labels, create_graph)
    return grad


def gradient_attention_map(grad: Tensor, p: float = 1, normalize: bool = True) -> Tensor:
    """The spatial map of an input gradient: ``sum_c |J_c|^p`` over the colour channels.

    The activation map of Section 3.1 applied to J instead of a feature tensor (it is
    :func:`~atcourse.distill.attention.attention_map` with ``reduce="sum"``).

    Args:
        grad: input gradients J [B, C, H, W] (C = 3 colour channels).
        p: power of |J| (1: the plain magnitude, summed over channels; 2: squared).
        normalize: divide each sample's flattened map by its L2 norm (only the layout then
            counts; a gradient's overall scale depends on how confident the network is).

    Returns:
        [B, H, W] non-negative maps, float32.
    """
    return attention_map(grad, p=p, reduce="sum", normalize=normalize)


_NORMS = ("l2", "squared")


def _mean_distance(a: Tensor, b: Tensor, norm: str = "l2") -> Tensor:
    """mean_b || a_b - b_b ||_2 (``"l2"``, Section 3.2) or its square (``"squared"``, the
    Jacobian matching of Srinivas & Fleuret, ICML 2018) over two [B, ...] tensors."""
    distance = (a - b).flatten(1).norm(p=2, dim=1)
    return (distance.pow(2) if norm == "squared" else distance).mean()


def _gradient_at(
    student: nn.Module, teacher: nn.Module, images: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(penalty, student logits, J_S): the body of :func:`gradient_at_loss`."""
    grad_s, logits = _gradient_and_logits(student, images, labels, create_graph=True)
    grad_t = input_gradient(teacher, images, labels).detach()
    return _mean_distance(grad_s, grad_t), logits, grad_s


def gradient_at_loss(
    student: nn.Module, teacher: nn.Module, images: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradient-AT penalty ``mean_b || J_S[b] - J_T[b] ||_2`` (Section 3.2).

    J_S is computed with ``create_graph=True``, so the penalty back-propagates to the
    student's weights (double backprop); J_T is detached, so the teacher receives no
    gradient. Each sample's gradients are flattened over [C, H, W]; the L2 norm (not
    squared) of their difference is averaged over the batch. The paper's ``beta / 2`` is not
    applied here: it is the method's weight (:class:`GradientAT`).

    Args:
        student: the network being trained (its mode decides batch norm's behaviour).
        teacher: the target network (usually frozen, in eval mode).
        images: [B, C, H, W]; labels: [B].

    Returns:
        (penalty, scalar; student logits [B, K] from the same forward that built J_S, so the
        caller can take the student's cross-entropy without a second forward).
    """
    loss, logits, _ = _gradient_at(student, teacher, images, labels)
    return loss, logits


def _flip_penalty(
    model: nn.Module, images: Tensor, labels: Tensor, create_graph: bool, norm: str = "l2"
) -> tuple[Tensor, Tensor, Tensor]:
    """(flip penalty, logits of ``images``, J(images)) from one forward of 2B images."""
    batch = images.shape[0]
    # x and its mirror in one forward: one call, one batch-norm update, and in train mode
    # both halves are normalized with the same statistics.
    both = torch.cat([images, _flip(images)])  # [2B, C, H, W]
    grad, logits = _gradient_and_logits(model, both, labels.repeat(2), create_graph)
    grad_x, grad_flipped = grad[:batch], grad[batch:]
    return _mean_distance(grad_x, _flip(grad_flipped), norm), logits[:batch], grad_x


def flip_invariance_loss(
    model: nn.Module, images: Tensor, labels: Tensor, create_graph: bool = True
) -> Tensor:
    """Flip-invariance penalty ``mean_b || J(x)[b] - flip(J(flip(x)))[b] ||_2`` (Section 3.2).

    J(flip(x)) is the input gradient at the mirrored image; mirroring it back puts it in
    x's coordinates. A model whose output does not change when its input is mirrored scores
    0. No teacher is involved. x and flip(x) go through ``model`` as one batch of 2B images.

    Args:
        model: the network (its mode decides batch norm's behaviour).
        images: [B, C, H, W]; labels: [B].
        create_graph: keep the graph for double backprop (True to train with it).

    Returns:
        A scalar.
    """
    loss, _, _ = _flip_penalty(model, images, labels, create_graph)
    return loss


@register("gradient_at", fixed={"mode": "teacher"})
@register("gradient_at_flip", teacher=False, fixed={"mode": "flip"})
@register("gradient_at_both", fixed={"mode": "both"})
class GradientAT(Distiller):
    """Gradient-based AT and/or the flip-invariance penalty (Section 3.2).

    ``mode`` (each registered as a method of its own):

    - ``"teacher"`` (``gradient_at``): ``CE + beta/2 * gradient_at_loss`` (needs a teacher);
    - ``"flip"`` (``gradient_at_flip``): ``CE + flip_beta/2 * flip_invariance_loss`` (no
      teacher; one passed anyway is not used and not kept);
    - ``"both"`` (``gradient_at_both``): both penalties.

    Loss terms: ``"ce"`` (weight 1) and ``"grad_at"`` (weight beta / 2) and/or ``"flip"``
    (weight flip_beta / 2): Eq. "L = CE + beta/2 ||J_S - J_T||_2" with the ``beta / 2`` in
    the weight, as in :class:`~atcourse.distill.attention.AT`'s paper mode.

    One student forward per step: the student's logits and cross-entropy come from the
    forward that builds J_S (in ``"flip"`` and ``"both"`` modes, a forward of the batch
    and its mirror together, 2B images, whose first half gives the logits). The teacher
    runs one forward and one backward (no graph kept).

    Precision. The forward runs in fp32 with autocast switched off, even inside the
    trainer's bf16 autocast (inputs are cast to at least float32). Under bf16 the input
    gradient would be a backward pass in 8-bit mantissas: J is a small quantity (a
    per-pixel sensitivity, typically 1e-4 to 1e-2 here) computed as a sum of many products,
    and the difference J_S - J_T of two such rounded tensors, then differentiated a second
    time, is dominated by rounding noise, and second-order terms underflow. The cost is
    paid only by this method.

    Default beta: 0.25, for both penalties. The paper gives no value for this loss (its
    CIFAR experiments use NIN networks without batch norm, and the beta it quotes belongs to
    activation AT); the default has not been re-chosen on the current ``shapes`` difficulty:
    notebook 03's validation sweep (``sweep=``) is where to choose it. J is the
    gradient of the *summed* cross-entropy (row b is image b's own gradient): an
    implementation that differentiates the batch-mean cross-entropy gets gradients B times
    smaller, so at batch 64, beta here is 64 x beta there.

    Args:
        student: the network being trained.
        teacher: the target network for ``"teacher"``/``"both"`` (frozen here); None for
            ``"flip"``.
        beta: weight of the gradient-AT term (it weighs beta / 2); None: 0.25.
        mode: ``"teacher"``, ``"flip"`` or ``"both"``.
        flip_beta: weight of the flip term (it weighs flip_beta / 2); None: ``beta``.
        norm: ``"l2"``, the unsquared norm of Section 3.2, or ``"squared"``, its square
            (Jacobian matching, Srinivas & Fleuret 2018).
        monitor: every ``monitor`` training steps (0: never), report as diagnostics each
            term's gradient norm on the student's weights (``weight_grad_norm/<term>``), the
            input gradients' norms, and cos(J_S, J_T) with J_S from batch norm in training
            and in evaluation mode (``cos_to_teacher/train_bn``, ``.../eval_bn``).
    """

    name = "gradient_at"
    knobs: ClassVar[dict[str, Param]] = {
        "beta": Param(
            float, "weight of the input-gradient penalty, which counts beta / 2 (None: 0.25)",
            min=0.0,
        ),
        "grad_norm": Param(
            str, "the penalty's norm: l2 (Section 3.2) or squared (Jacobian matching)",
            choices=_NORMS, arg="norm",
        ),
        "grad_monitor": Param(
            int, "every this many steps, report the per-term gradient norms and cos(J_S, J_T) "
            "(0: never)", min=0, arg="monitor",
        ),
    }  # fmt: skip
    double_backward = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        beta: float | None = None,
        mode: str = "teacher",
        flip_beta: float | None = None,
        norm: str = "l2",
        monitor: int = 0,
    ):
        # Checked before the base class freezes the teacher, so a bad argument leaves both
        # models as they were.
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {', '.join(_NORMS)}; got {norm!r}")
        if monitor < 0:
            raise ValueError(f"monitor must be >= 0 (0: never), got {monitor}")
        if mode != "flip" and teacher is None:
            raise ValueError(
                f"gradient_at with mode={mode!r} compares the student's input gradient with a "
                "teacher's, so it needs teacher=...; mode='flip' trains without one"
            )
        for label, value in (("beta", beta), ("flip_beta", flip_beta)):
            if value is not None and value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        super().__init__(student, teacher if mode != "flip" else None)
        self.beta = float(DEFAULT_BETA if beta is None else beta)
        self.flip_beta = float(self.beta if flip_beta is None else flip_beta)
        self.mode = mode
        self.norm, self.monitor = norm, int(monitor)
        self._calls = 0
        self.name = {"teacher": "gradient_at", "flip": "gradient_at_flip"}.get(
            mode, "gradient_at_both"
        )

    def _teacher_gradient(self, images: Tensor, labels: Tensor) -> Tensor:
        """J_T, the teacher's input gradient on this batch (a constant target)."""
        name = f"grad_at/J_T/{images.dtype}"
        compute = lambda: {name: input_gradient(self.teacher, images, labels)}  # noqa: E731
        return self.teacher_outputs([name], compute, inference=False)[name]  # needs autograd

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images [B, 3, H, W], labels [B] -> logits [B, K], {"ce", "grad_at"/"flip"}."""
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {"ce": 1.0}
        with _no_autocast(images.device):  # fp32 double backward (see the class docstring)
            images = at_least_fp32(images)  # a float64 model stays in float64
            if self.mode == "teacher":
                grad_s, logits = _gradient_and_logits(self.student, images, labels, True)
            else:
                flip, logits, grad_s = _flip_penalty(self.student, images, labels, True, self.norm)
            grad_t = self._teacher_gradient(images, labels) if self.mode != "flip" else None
            if grad_t is not None:
                grad_at = _mean_distance(grad_s, grad_t, self.norm)
            terms["ce"] = F.cross_entropy(at_least_fp32(logits), labels)
            if self.mode != "flip":
                terms["grad_at"] = grad_at
                weights["grad_at"] = self.beta / 2
            if self.mode != "teacher":
                terms["flip"] = flip
                weights["flip"] = self.flip_beta / 2
            diagnostics = {}
            if self.training and self.monitor and self._calls % self.monitor == 0:
                diagnostics = self._monitor(images, labels, terms, weights, grad_s, grad_t)
        self._calls += self.training
        return DistillOutput(logits, terms, weights, diagnostics)

    def _monitor(
        self,
        images: Tensor,
        labels: Tensor,
        terms: dict[str, Tensor],
        weights: dict[str, float],
        grad_s: Tensor,
        grad_t: Tensor | None,
    ) -> dict[str, Tensor]:
        """What the penalty does to the student: each term's pull on its weights and how
        its input gradient points, with batch norm as in training and as in evaluation."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        out = {}
        for name, value in terms.items():
            grads = torch.autograd.grad(weights.get(name, 1.0) * value, params,
                                        retain_graph=True, allow_unused=True)  # fmt: skip
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None))
            out[f"weight_grad_norm/{name}"] = norm.detach()
        out["input_grad_norm/student"] = grad_s.detach().flatten(1).norm(dim=1).mean()
        if grad_t is not None:
            with eval_mode(self.student):
                grad_eval = input_gradient(self.student, images, labels)
            flat_t = grad_t.flatten(1)
            for mode, grad in (("train", grad_s.detach()), ("eval", grad_eval)):
                cos = F.cosine_similarity(grad.flatten(1), flat_t, dim=1, eps=1e-20)
                out[f"cos_to_teacher/{mode}_bn"] = cos.mean()
            out["input_grad_norm/teacher"] = flat_t.norm(dim=1).mean()
        return out

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "mode": self.mode, "flip_beta": self.flip_beta,
                "norm": self.norm}  # fmt: skip
