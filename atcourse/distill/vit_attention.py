"""Attention transfer for Vision Transformers: attention copy and attention distillation.

Li, Tian, Chen, Pathak, Chen, "On the Surprising Effectiveness of Attention Transfer for
Vision Transformers", NeurIPS 2024 (arXiv:2411.09702).

In a ViT block, head ``h`` of layer ``l`` mixes the tokens' values with the attention
probabilities ``A^{l,h} = softmax(Q K^T / sqrt(d))``, a ``(N, N)`` row-stochastic matrix: row
``i`` says how much token ``i`` takes from every token ``j`` (the "information flow"). The
paper asks how much of pre-training lives in these maps alone, and transfers nothing else
from a pre-trained teacher ViT to a randomly initialised student of the same shape:

- **Attention copy**: the student's attention probabilities are *replaced* by the
  teacher's, computed on the same image, in the chosen layers. The student learns its own
  patch embedding, values, projections, MLPs and head; its queries and keys in those layers
  are unused. The teacher runs at inference too, so the pair costs about two networks.
- **Attention distillation**: the student computes its own attention and is trained to
  match the teacher's, per layer, with a cross-entropy between the softmaxed rows::

      L = CE(y, f_S(x)) + w * sum_{l in layers} mean_{b,h,i} H(A_T^{l,h}[b,i,:], A_S^{l,h}[b,i,:])

  where ``H(p, q) = -sum_j p_j log q_j``. ``H(p, q) = KL(p || q) + H(p)`` and the teacher's
  entropy ``H(p)`` does not depend on the student, so the gradients are those of the KL
  divergence; :func:`attention_distillation_loss` returns the KL form (0 when the maps
  agree). The reference implementation (``models_dual_vit.py`` of the authors'
  repository) sums the per-layer terms over its transferred layers, weight ``w = 3.0``, all
  heads, CLS token included; the teacher runs under ``no_grad``. Only the student needs the
  teacher during training; at inference it stands alone.

Which layers. The paper's text copies attention in every layer and distills layers 0..17 of
a 24-layer ViT-L (the last 6 left free); its released code runs both methods with
``end_layer=-3``, blocks 0..20 of 24, which ``main_finetune.py`` never changes. The course
follows the code by default and names the paper's choice ``"paper"``
(:func:`default_layers`).

Attention probabilities cannot be read out of the fused ``scaled_dot_product_attention``
kernel, which never stores the ``(N, N)`` matrix; :class:`~atcourse.models.vit.Attention`
computes it explicitly only while a tap or an override needs it, so both methods
materialize the maps in the transferred layers and nowhere else.

ImageNet-1K, ViT-L/16, MAE-pre-trained teacher (the paper's main table): from scratch
83.0, fine-tuning 85.7, attention copy 85.1, attention distillation 85.7 (top-1 %).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from ..models import Taps, forward_until
from ..models.vit import Attention
from ..models.vit_maps import attention_layers, attention_probs, resolve_layers, tap_names
from .base import Distiller, DistillOutput, at_least_fp32
from .registry import register

__all__ = [
    "attention_distillation_loss", "attention_overlap", "default_layers", "LAYER_RULES",
    "attention_agreement", "AttentionDistillation", "AttentionCopy", "DISTILL_WEIGHT",
]  # fmt: skip

#: The reference implementation's weight of the attention-distillation term (``atd_weight``).
DISTILL_WEIGHT = 3.0


# ----------------------------------------------------------------------------- the loss


def _check_maps(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(
            f"{what} expects attention maps (B, heads, N, N), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student and teacher maps differ in shape, {tuple(student.shape)} vs "
            f"{tuple(teacher.shape)}; attention transfer needs the same heads and tokens "
            "(same patch size, image size and head count)"
        )
    if student.shape[-1] != student.shape[-2]:
        raise ValueError(f"{what}: maps must be square (N, N), got {tuple(student.shape[-2:])}")


def attention_distillation_loss(student_attn_logits: Tensor, teacher_attn_logits: Tensor) -> Tensor:
    """KL(teacher || student) of the softmaxed attention rows, one layer.

    With ``p = softmax(teacher_attn_logits)`` and ``q = softmax(student_attn_logits)`` over the
    last (key) dimension::

        L = mean_{b, h, i} sum_j p[b, h, i, j] * (log p[b, h, i, j] - log q[b, h, i, j])

    summed over keys ``j``, averaged over the batch, the heads and the queries ``i`` (CLS
    included). The paper writes the cross-entropy ``-sum_j p log q``, which is this plus the
    teacher's entropy: same gradients, but the KL form is 0 exactly when the maps agree.

    Args:
        student_attn_logits: pre-softmax scores ``q k^T / sqrt(d)``, ``(B, heads, N, N)``, in
            the autograd graph.
        teacher_attn_logits: the teacher's, same shape; treated as constants (detached).

    Returns:
        A scalar, at least float32 (bf16/fp16 maps from autocast are upcast first, so the
        log-softmax does not lose digits).
    """
    _check_maps(student_attn_logits, teacher_attn_logits, "attention_distillation_loss")
    log_q = F.log_softmax(at_least_fp32(student_attn_logits), dim=-1)
    log_p = F.log_softmax(at_least_fp32(teacher_attn_logits.detach()), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (B, heads, N)
    return kl.mean()


def attention_overlap(student_probs: Tensor, teacher_probs: Tensor) -> Tensor:
    """How much two attention maps agree: ``mean_{b, h, i} sum_j min(p_ij, q_ij)``.

    One minus the total-variation distance of each row, averaged over batch, heads and
    queries: 1 when the maps are identical, 0 when no row shares any mass. Easier to read
    than a KL divergence, which is unbounded.

    Args:
        student_probs, teacher_probs: attention probabilities ``(B, heads, N, N)``.

    Returns:
        A scalar in [0, 1].
    """
    _check_maps(student_probs, teacher_probs, "attention_overlap")
    return torch.minimum(at_least_fp32(student_probs), at_least_fp32(teacher_probs)).sum(-1).mean()


# ----------------------------------------------------------------------------- layers


#: Named layer selections besides indices and "all"/"early"/"late" (:func:`default_layers`).
LAYER_RULES = ("code", "paper")


def default_layers(depth: int, method: str, rule: str = "code") -> list[int]:
    """The blocks attention transfer uses when none are named: the released code's, or the paper's.

    - ``"code"`` (the default): as the authors' released code runs it. Its models take
      ``end_layer=-3`` and ``main_finetune.py`` never changes it, so attention copy and
      attention distillation both act on every block but the last 3: blocks 0..20 of a
      24-block ViT-L. On the course's 6-block ViT that leaves the last 3 of 6 free.
    - ``"paper"``: the paper's text: attention copy in every block; attention distillation
      in all but the last quarter (blocks 0..17 of 24, the last 6 free; rounded half up).

    The code's rule is the default because the published numbers come from it; at least one
    block is always transferred.

    Args:
        depth: number of blocks; method: ``"copy"`` or ``"distill"``; rule: a
            :data:`LAYER_RULES` name.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if rule not in LAYER_RULES or method not in ("copy", "distill"):
        raise ValueError(f"rule must be one of {LAYER_RULES} and method 'copy' or 'distill', "
                         f"got {rule!r}, {method!r}")  # fmt: skip
    if rule == "code":
        return list(range(max(1, depth - 3)))
    if method == "copy":
        return list(range(depth))
    return list(range(max(1, depth - (depth + 2) // 4)))


def _layers(spec: Sequence[int] | str | None, depth: int, method: str) -> list[int]:
    """The blocks a method transfers: a rule's (None: ``"code"``), or :func:`resolve_layers`'."""
    if spec is None or spec in LAYER_RULES:
        return default_layers(depth, method, spec or "code")
    return resolve_layers(spec, depth, default_layers(depth, method))


def _check_pair(student: nn.Module, teacher: nn.Module) -> tuple[list[Attention], list[Attention]]:
    s_layers, t_layers = attention_layers(student), attention_layers(teacher)
    if len(s_layers) != len(t_layers):
        raise ValueError(
            f"student and teacher differ in depth ({len(s_layers)} vs {len(t_layers)} blocks); "
            "attention transfer pairs layer l of the teacher with layer l of the student"
        )
    for i, (s, t) in enumerate(zip(s_layers, t_layers, strict=True)):
        if s.heads != t.heads:
            raise ValueError(
                f"block {i}: student has {s.heads} heads, teacher {t.heads}; attention maps "
                "are transferred head by head, so the head counts must match"
            )
    s_tokens = getattr(student, "num_tokens", None)
    t_tokens = getattr(teacher, "num_tokens", None)
    if s_tokens != t_tokens:
        raise ValueError(
            f"student and teacher see {s_tokens} and {t_tokens} tokens: use the same image "
            "and patch size"
        )
    return s_layers, t_layers


# ----------------------------------------------------------------------------- methods


@register("attn_distill")
class AttentionDistillation(Distiller):
    """Attention distillation: ``CE + attn_weight * sum_l attention_distillation_loss_l``.

    The student computes its own attention everywhere; in the layers ``attn_layers`` its
    pre-softmax logits are tapped (which makes those layers take the explicit path) and
    pulled towards the teacher's, read from a teacher forward under ``no_grad``. Other
    layers, in both networks, keep the fused kernel. At inference the student runs alone.

    Args:
        student: a ViT (images -> logits), randomly initialised.
        teacher: a ViT of the same depth, heads and token count (pre-trained, frozen here);
            its classifier is never used, so it may have been trained on other classes.
        attn_weight: the weight ``w`` of the summed per-layer terms (3.0, the reference
            implementation's ``atd_weight``).
        attn_layers: which blocks to distill: indices, ``"all"``, ``"early"``, ``"late"``,
            ``"code"`` or ``"paper"`` (:func:`default_layers`; None is ``"code"``).
        log_layers: also report each layer's term as the diagnostic ``"attn/<i>"``.

    Loss terms: ``"ce"`` and ``"attn"`` (sum over the layers, unweighted); diagnostics,
    with ``log_layers``: ``"attn/<i>"`` per layer.
    """

    name = "attn_distill"
    knobs: ClassVar[dict[str, Param]] = {
        "attn_weight": Param(float, "weight of the summed per-layer attention terms", min=0.0),
        "attn_layers": Param(
            (tuple, str),
            "ViT blocks to transfer: indices, 'all', 'early', 'late', 'code' (the released "
            "code's: all but the last 3; None) or 'paper' (the paper's text)",
            items=int,
        ),
    }

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        attn_weight: float = DISTILL_WEIGHT,
        attn_layers: Sequence[int] | str | None = None,
        log_layers: bool = True,
    ):
        s_layers, _ = _check_pair(student, teacher)
        if attn_weight < 0:
            raise ValueError(f"attn_weight must be >= 0, got {attn_weight}")
        depth = len(s_layers)
        layers = _layers(attn_layers, depth, "distill")
        super().__init__(student, teacher)
        self.attn_weight = float(attn_weight)
        self.attn_layers = layers
        self.log_layers = log_layers
        self._names = tap_names(self.attn_layers, "logits")

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images (B, 3, H, W), labels (B) -> student logits (B, K), {"ce", "attn", ...}."""
        t_maps = self.teacher_outputs(
            self._names, lambda: forward_until(self.teacher, images, self._names)
        )  # the teacher runs only as far as the last distilled block
        with Taps(self.student, self._names) as s_taps:
            logits = self.student(images)
        per_layer = [attention_distillation_loss(s_taps[n], t_maps[n]) for n in self._names]
        terms = {"ce": F.cross_entropy(logits, labels), "attn": torch.stack(per_layer).sum()}
        diagnostics = {}
        if self.log_layers:
            diagnostics = {
                f"attn/{i}": value.detach()
                for i, value in zip(self.attn_layers, per_layer, strict=True)
            }
        return DistillOutput(logits, terms, {"ce": 1.0, "attn": self.attn_weight}, diagnostics)

    def hparams(self) -> dict[str, Any]:
        return {"attn_weight": self.attn_weight, "attn_layers": list(self.attn_layers)}


@register("attn_copy")
class AttentionCopy(Distiller):
    """Attention copy: the student mixes its own values with the teacher's attention.

    For every image, the teacher runs first (``no_grad``) with its attention probabilities
    tapped in the layers ``attn_layers``; those maps are then set as ``probs_override`` of
    the student's matching layers for one forward pass. In those layers the student's queries
    and keys have no effect on its output and receive no gradient; it learns everything
    else. :meth:`predict` does the same, so the teacher is needed at inference and every
    evaluation (``fit``'s, ``metrics.accuracy(method.predict, ...)``) includes it.

    Args:
        student: a ViT, randomly initialised.
        teacher: a ViT of the same depth, heads and token count (frozen here).
        attn_layers: which blocks get the teacher's maps: indices, ``"all"``, ``"early"``,
            ``"late"``, ``"code"`` or ``"paper"`` (:func:`default_layers`; None is ``"code"``).

    Loss terms: ``"ce"``.
    """

    name = "attn_copy"
    knobs: ClassVar[dict[str, Param]] = {
        "attn_layers": AttentionDistillation.knobs["attn_layers"],
    }

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        attn_layers: Sequence[int] | str | None = None,
    ):
        s_layers, _ = _check_pair(student, teacher)
        depth = len(s_layers)
        layers = _layers(attn_layers, depth, "copy")
        super().__init__(student, teacher)
        self.attn_layers = layers
        self._names = tap_names(layers, "probs")

    def teacher_attention(self, images: Tensor) -> list[Tensor]:
        """The teacher's attention probabilities in ``attn_layers``, each (B, heads, N, N)."""
        maps = self.teacher_outputs(
            self._names, lambda: forward_until(self.teacher, images, self._names)
        )
        return [maps[n] for n in self._names]

    def _copy_forward(self, images: Tensor) -> Tensor:
        maps = self.teacher_attention(images)
        modules = attention_layers(self.student)
        try:
            for i, probs in zip(self.attn_layers, maps, strict=True):
                modules[i].probs_override = probs
            return self.student(images)
        finally:
            # Always cleared: a stale override would silently reuse the teacher's maps of
            # another batch (or fail on a batch of another size).
            for i in self.attn_layers:
                modules[i].probs_override = None

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images (B, 3, H, W), labels (B) -> student logits (B, K), {"ce"}."""
        logits = self._copy_forward(images)
        return DistillOutput(logits, {"ce": F.cross_entropy(logits, labels)}, {"ce": 1.0})

    def predict(self, images: Tensor) -> Tensor:
        """Student logits with the teacher's attention: the teacher runs at inference too."""
        return self._copy_forward(images)

    def hparams(self) -> dict[str, Any]:
        return {"attn_layers": list(self.attn_layers)}


@torch.no_grad()
def attention_agreement(
    student: nn.Module,
    teacher: nn.Module,
    images: Tensor,
    layers: Sequence[int] | str | None = None,
    *,
    predict: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
) -> dict[str, list[float]]:
    """How closely the student's attention matches the teacher's, layer by layer.

    Args:
        student, teacher: ViTs of the same shape.
        images: (M, 3, H, W), processed in chunks of ``batch_size``.
        layers: as in :func:`attention_probs` (None: all).
        predict: what runs the student (an :class:`AttentionCopy`'s ``predict`` shows the
            maps the copy student really uses: the teacher's, in the copied layers).

    Returns:
        ``{"layers": [i, ...], "kl": [...], "overlap": [...]}``: per layer, the mean
        KL(teacher || student) in nats (:func:`attention_distillation_loss` on the
        probabilities) and the mean :func:`attention_overlap` (1: identical maps).
    """
    _check_pair(student, teacher)
    depth = len(attention_layers(student))
    indices = resolve_layers(layers, depth, list(range(depth)))
    kl = torch.zeros(len(indices), dtype=torch.float64)
    overlap = torch.zeros(len(indices), dtype=torch.float64)
    total = 0
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        s_maps = attention_probs(student, chunk, indices, predict=predict)
        t_maps = attention_probs(teacher, chunk, indices)
        for k, i in enumerate(indices):
            s, t = s_maps[i], t_maps[i]
            # log of probabilities: log_softmax(log p) = log p, so the loss applies as is
            s_log, t_log = s.clamp_min(1e-12).log(), t.clamp_min(1e-12).log()
            kl[k] += attention_distillation_loss(s_log, t_log).double().item() * len(chunk)
            overlap[k] += attention_overlap(s, t).double().item() * len(chunk)
        total += len(chunk)
    return {
        "layers": indices,
        "kl": (kl / total).tolist(),
        "overlap": (overlap / total).tolist(),
    }
