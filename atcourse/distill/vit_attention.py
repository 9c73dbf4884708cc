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
  repository) sums the per-layer terms over layers ``0 .. depth - 7`` of a 24-layer ViT-L
  (the last 6 left free), weight ``w = 3.0``, all heads, CLS token included; the teacher
  runs under ``no_grad``. Only the student needs the teacher during training; at
  inference it stands alone.

Attention probabilities cannot be read out of the fused ``scaled_dot_product_attention``
kernel, which never stores the ``(N, N)`` matrix; :class:`~atcourse.models.vit.Attention`
computes it explicitly only while a tap or an override needs it, so both methods
materialize the maps in the transferred layers and nowhere else.

ImageNet-1K, ViT-L/16, MAE-pre-trained teacher (the paper's main table): from scratch
83.0, fine-tuning 85.7, attention copy 85.1, attention distillation 85.7 (top-1 %).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Taps
from ..models.vit import Attention
from ..runtime import eval_mode
from . import register
from .base import Baseline, Distiller, DistillOutput

__all__ = [
    "attention_distillation_loss",
    "attention_overlap",
    "default_distill_layers",
    "resolve_layers",
    "attention_layers",
    "attention_probs",
    "cls_attention",
    "attention_rollout",
    "attention_agreement",
    "materialization_cost",
    "AttentionDistillation",
    "AttentionCopy",
    "FineTune",
    "DISTILL_WEIGHT",
]

#: The reference implementation's weight of the attention-distillation term (``atd_weight``).
DISTILL_WEIGHT = 3.0

_LAYER_WORDS = ("all", "early", "late")


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


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


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
    log_q = F.log_softmax(_upcast(student_attn_logits), dim=-1)
    log_p = F.log_softmax(_upcast(teacher_attn_logits.detach()), dim=-1)
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
    return torch.minimum(student_probs.float(), teacher_probs.float()).sum(-1).mean()


# ----------------------------------------------------------------------------- layers


def attention_layers(model: nn.Module) -> list[Attention]:
    """The attention modules of a ViT, first block first.

    Raises:
        TypeError: when ``model`` has no ``attention_layers()`` method returning
            :class:`~atcourse.models.vit.Attention` modules (attention transfer needs a ViT).
    """
    getter = getattr(model, "attention_layers", None)
    layers = getter() if callable(getter) else None
    if not layers or not all(isinstance(a, Attention) for a in layers):
        raise TypeError(
            f"{type(model).__name__} is not a ViT with readable attention: attention transfer "
            "needs a model with attention_layers() (e.g. atcourse.models.build('vit_tiny'))"
        )
    return list(layers)


def default_distill_layers(depth: int) -> list[int]:
    """All layers but the last quarter (rounded half up): ``0 .. depth - (depth + 2) // 4 - 1``.

    The paper distills layers 0..17 of a 24-layer ViT-L and leaves the last 6 free, so the
    student's top layers can specialise for its own task; the reference code does the same
    on ViT-B (12 layers, the last 3 free). At least one layer is always distilled.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return list(range(max(1, depth - (depth + 2) // 4)))


def resolve_layers(
    spec: Sequence[int] | str | None, depth: int, default: Sequence[int]
) -> list[int]:
    """Layer indices from a specification.

    Args:
        spec: ``None`` (``default``), ``"all"``, ``"early"`` (the first half, rounded up),
            ``"late"`` (the rest), or indices (negative ones count from the end).
        depth: number of blocks.
        default: what ``None`` means.

    Returns:
        Sorted, distinct indices in ``[0, depth)``.
    """
    if spec is None:
        indices = list(default)
    elif isinstance(spec, str):
        half = (depth + 1) // 2
        words = {"all": range(depth), "early": range(half), "late": range(half, depth)}
        if spec not in words:
            raise ValueError(
                f"layers must be None, one of {', '.join(map(repr, _LAYER_WORDS))}, or a list "
                f"of block indices; got {spec!r}"
            )
        indices = list(words[spec])
    else:
        indices = []
        for i in spec:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"layer indices must be ints, got {i!r} in {list(spec)}")
            if not -depth <= i < depth:
                raise ValueError(f"layer index {i} is out of range for a ViT of depth {depth}")
            indices.append(i % depth)
    if not indices:
        raise ValueError(f"no layers selected (spec {spec!r}, depth {depth})")
    return sorted(set(indices))


def _tap_names(indices: Sequence[int], kind: str) -> list[str]:
    return [f"blocks.{i}.attn.{kind}" for i in indices]


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
            or None for :func:`default_distill_layers` (all but the last quarter).
        log_layers: also log each layer's term as ``"attn/<i>"`` (weight 0, detached).

    Loss terms: ``"ce"``, ``"attn"`` (sum over the layers, unweighted) and, with
    ``log_layers``, ``"attn/<i>"`` per layer.
    """

    name = "attn_distill"

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
        layers = resolve_layers(attn_layers, depth, default_distill_layers(depth))
        super().__init__(student, teacher)
        self.attn_weight = float(attn_weight)
        self.attn_layers = layers
        self.log_layers = log_layers
        self._names = _tap_names(self.attn_layers, "logits")

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images (B, 3, H, W), labels (B) -> student logits (B, K), {"ce", "attn", ...}."""
        with torch.no_grad(), Taps(self.teacher, self._names, detach=True) as t_taps:
            self.teacher(images)
        with Taps(self.student, self._names) as s_taps:
            logits = self.student(images)
        per_layer = [attention_distillation_loss(s_taps[n], t_taps[n]) for n in self._names]
        terms: dict[str, Tensor] = {
            "ce": F.cross_entropy(logits, labels),
            "attn": torch.stack(per_layer).sum(),
        }
        weights = {"ce": 1.0, "attn": self.attn_weight}
        if self.log_layers:
            for i, value in zip(self.attn_layers, per_layer, strict=True):
                terms[f"attn/{i}"] = value.detach()
                weights[f"attn/{i}"] = 0.0
        return DistillOutput(logits, terms, weights)

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
        attn_layers: which blocks get the teacher's maps: indices, ``"all"`` (None, the
            paper's setting), ``"early"`` or ``"late"``.

    Loss terms: ``"ce"``.
    """

    name = "attn_copy"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        attn_layers: Sequence[int] | str | None = None,
    ):
        s_layers, _ = _check_pair(student, teacher)
        depth = len(s_layers)
        layers = resolve_layers(attn_layers, depth, list(range(depth)))
        super().__init__(student, teacher)
        self.attn_layers = layers
        self._names = _tap_names(layers, "probs")

    @torch.no_grad()
    def teacher_attention(self, images: Tensor) -> list[Tensor]:
        """The teacher's attention probabilities in ``attn_layers``, each (B, heads, N, N)."""
        with Taps(self.teacher, self._names, detach=True) as taps:
            self.teacher(images)
        return [taps[n] for n in self._names]

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


@register("finetune")
class FineTune(Distiller):
    """Fine-tuning, the usual way to use a pre-trained network: the paper's reference row.

    The student starts from the teacher's weights, except the classifier, which keeps its
    fresh initialisation (the new task's classes need not be the teacher's); then all of it
    is trained with cross-entropy. The teacher is held (frozen) only so the run records
    where the weights came from; it plays no part in the loss or at inference.

    Args:
        student: a freshly built network of the teacher's architecture; every weight but
            those under ``head_name`` is overwritten with the teacher's.
        teacher: the pre-trained network.
        head_name: the classifier's module name (``"head"`` in the built-in ViT).
        label_smoothing: as in :class:`~atcourse.distill.Baseline`.

    Loss terms: ``"ce"``.
    """

    name = "finetune"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        head_name: str = "head",
        label_smoothing: float = 0.0,
    ):
        prefix = head_name + "."
        weights = {k: v for k, v in teacher.state_dict().items() if not k.startswith(prefix)}
        if len(weights) == len(teacher.state_dict()):
            raise ValueError(
                f"the teacher has no module {head_name!r} to leave out; pass the name of "
                "its classifier as head_name"
            )
        why = "fine-tuning needs a student of the teacher's architecture"
        try:
            missing, unexpected = student.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # shapes differ
            first = str(err).split("\n\t")[1:2] or [str(err)]
            raise ValueError(f"{why}: {first[0].strip()}") from None
        missing = [k for k in missing if not k.startswith(prefix)]
        if missing or unexpected:
            raise ValueError(f"{why}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        super().__init__(student, teacher)
        self.head_name = head_name
        self.label_smoothing = label_smoothing

    # Trained as the student alone is: only the starting weights differ.
    forward = Baseline.forward

    def hparams(self) -> dict[str, Any]:
        return {"head_name": self.head_name, "label_smoothing": self.label_smoothing}


# ----------------------------------------------------------------------------- reading maps


@torch.no_grad()
def attention_probs(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[int] | str | None = None,
    *,
    predict: Callable[[Tensor], Tensor] | None = None,
) -> dict[int, Tensor]:
    """The attention probabilities a ViT uses on ``images``, per layer, for figures and metrics.

    One eval-mode forward under ``no_grad`` (the model's mode is restored), with taps on the
    ``probs`` of the chosen layers.

    Args:
        model: a ViT (the student when ``predict`` is given).
        images: (B, 3, H, W).
        layers: indices, ``"all"``/``"early"``/``"late"``, or None (all).
        predict: what runs the forward pass, e.g. an :class:`AttentionCopy`'s ``predict``,
            whose student then shows the teacher's maps in the copied layers (the maps it
            really uses). Default: ``model`` itself.

    Returns:
        ``{layer index: (B, heads, N, N)}``, rows summing to 1.
    """
    depth = len(attention_layers(model))
    indices = resolve_layers(layers, depth, list(range(depth)))
    names = _tap_names(indices, "probs")
    with eval_mode(model), Taps(model, names, detach=True) as taps:
        (predict or model)(images)
    return {i: taps[n].float() for i, n in zip(indices, names, strict=True)}


def cls_attention(probs: Tensor, *, cls_index: int = 0) -> Tensor:
    """Where the CLS token looks: its row of the attention map, as a patch grid.

    Args:
        probs: ``(B, heads, N, N)`` with ``N = 1 + g * g`` (CLS first, then the patches in
            row-major order), or ``(B, N, N)`` (e.g. a rollout).
        cls_index: the CLS token's position.

    Returns:
        ``(B, heads, g, g)`` (or ``(B, g, g)``): the weight the CLS query gives each patch.
        Without the CLS column a row no longer sums to 1; it sums to 1 minus the weight
        the CLS token gives itself.
    """
    if probs.dim() not in (3, 4):
        raise ValueError(f"expected (B, heads, N, N) or (B, N, N), got {tuple(probs.shape)}")
    n = probs.shape[-1]
    grid = int(round((n - 1) ** 0.5))
    if grid * grid != n - 1:
        raise ValueError(f"{n} tokens is not 1 CLS + a square grid of patches")
    row = probs[..., cls_index, :]  # (..., N)
    patches = torch.cat([row[..., :cls_index], row[..., cls_index + 1 :]], dim=-1)
    return patches.reshape(*patches.shape[:-1], grid, grid)


def attention_rollout(probs: Sequence[Tensor], *, residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020, Eq. 1): attention through all the layers.

    A block adds its attention output to the residual stream, so token ``i`` after layer
    ``l`` is a mix of itself and of what it attended to. Per layer, the heads are averaged
    and the identity is mixed in, then the rows are renormalized::

        Ã_l = (1 - residual) * mean_h A_l + residual * I,   Ã_l /= Ã_l.sum(-1)
        R = Ã_L @ ... @ Ã_2 @ Ã_1

    ``R[i, j]`` is how much of input token ``j`` reaches token ``i`` at the top, if the
    MLPs are ignored and the mixing is taken as linear (a heuristic, not an exact
    attribution). The CLS row of ``R`` gives a map over the patches (:func:`cls_attention`).

    Args:
        probs: per layer, first layer first, ``(B, heads, N, N)``.
        residual: the identity's share, 0.5 in the paper (the residual connection weighs
            as much as the attention).

    Returns:
        ``(B, N, N)``, rows summing to 1.
    """
    if not probs:
        raise ValueError("attention_rollout needs the maps of at least one layer")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    rollout: Tensor | None = None
    for layer in probs:
        if layer.dim() != 4:
            raise ValueError(f"expected (B, heads, N, N) per layer, got {tuple(layer.shape)}")
        a = layer.float().mean(dim=1)  # (B, N, N)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = (1.0 - residual) * a + residual * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout  # later layers act last
    assert rollout is not None
    return rollout


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


# ----------------------------------------------------------------------------- cost


def _saved_bytes(fn: Callable[[], Tensor]) -> tuple[Tensor, int]:
    """Run ``fn`` and count the bytes autograd keeps for the backward pass (distinct storages)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def materialization_cost(
    model: nn.Module,
    images: Tensor,
    *,
    repeats: int = 5,
    explicit_layers: Sequence[int] | str | None = "all",
) -> dict[str, dict[str, float]]:
    """Time and memory of a training step with the fused kernel vs materialized attention.

    Runs forward + backward of ``model(images).sum()`` ``repeats`` times on each path (after
    one warm-up), with ``materialize=True`` on the ``explicit_layers`` for the explicit
    path. Memory is what autograd saves for the backward pass, counted exactly with
    ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages), so it is the same on
    every machine; on CUDA the peak allocated memory is reported as well.

    Args:
        model: a ViT; its ``materialize`` flags are restored afterwards.
        images: one batch (B, 3, H, W) on the model's device.
        repeats: timed steps per path (the median is reported).
        explicit_layers: layers materialized on the explicit path (default: all).

    Returns:
        ``{"fused": {...}, "explicit": {...}}``, each with ``"ms"`` (median step time),
        ``"saved_mib"`` (activations kept for backward) and, on CUDA, ``"peak_mib"``.
    """
    modules = attention_layers(model)
    indices = resolve_layers(explicit_layers, len(modules), list(range(len(modules))))
    before = [m.materialize for m in modules]
    device = images.device
    results: dict[str, dict[str, float]] = {}
    try:
        for path in ("fused", "explicit"):
            for i, m in enumerate(modules):
                m.materialize = path == "explicit" and i in indices
            times = []
            saved = 0
            peak = 0.0
            for step in range(repeats + 1):
                model.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
                out, saved = _saved_bytes(lambda: model(images).float().sum())
                out.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20
                if step > 0:  # the first step warms caches and allocators up
                    times.append(time.perf_counter() - start)
            row = {"ms": 1000 * sorted(times)[len(times) // 2], "saved_mib": saved / 2**20}
            if device.type == "cuda":
                row["peak_mib"] = peak
            results[path] = row
    finally:
        for m, flag in zip(modules, before, strict=True):
            m.materialize = flag
        model.zero_grad(set_to_none=True)
    return results
