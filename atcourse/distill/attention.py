"""Activation-based attention transfer (AT).

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017.

A spatial attention map says where a layer's activations are strong. From an activation
tensor A of one image, [C, H, W], Section 3.1 defines three maps [H, W]:

    F_sum(A)   = sum_c |A_c|
    F_sum^p(A) = sum_c |A_c|^p      (p = 2 by default; larger p favours the strongest spots)
    F_max^p(A) = max_c |A_c|^p

The student is trained to make its maps, at several depths, look like the teacher's.
Paper, Eq. 2, with Q^j = vec(F(A^j)) the flattened map of layer pair j::

    L_AT = CE + beta / 2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p

The reference implementation squares the difference and averages it over positions and
the batch instead, with beta = 1e3; :func:`at_loss` computes both forms (``mode``).
Without the L2 normalisation of each map, training fails: the loss would chase the
activations' scale rather than their layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from ..metrics import mask_alignment
from ..models import Taps, forward_until, forward_with_taps, tap_points
from ..runtime import eval_mode
from .base import Distiller, DistillOutput, at_least_fp32
from .registry import register

__all__ = [
    "attention_map", "at_loss", "teacher_map", "attention_maps", "attention_alignment", "AT",
    "CODE_BETA", "PAPER_BETA",
]  # fmt: skip

_REDUCE = ("sum", "mean", "max")
_MODES = ("code", "paper")

#: Default AT weight in "code" mode (the reference implementation's beta).
CODE_BETA = 1e3
#: Default beta in "paper" mode (Eq. 2's beta, so the term weighs beta / 2); see :class:`AT`.
PAPER_BETA = 2.5


def attention_map(
    features: Tensor, p: float = 2, reduce: str = "mean", normalize: bool = True
) -> Tensor:
    """Spatial attention map of a feature tensor (Section 3.1).

    Args:
        features: activations [B, C, H, W].
        p: the power in |A|^p (p = 1 with ``reduce="sum"`` is F_sum).
        reduce: how the C channels of |A|^p are combined: ``"sum"`` (F_sum^p), ``"mean"``
            (F_sum^p / C, what the reference code uses) or ``"max"`` (F_max^p).
        normalize: divide each sample's flattened map by its L2 norm (Eq. 2's
            Q / ||Q||_2), so only the layout counts, not the scale. After normalizing,
            ``"sum"`` and ``"mean"`` give the same map.

    Returns:
        [B, H, W] non-negative maps in the features' dtype, at least float32 (bf16/fp16
        inputs are upcast so the channel reduction and the norm do not lose digits).
    """
    if features.dim() != 4:
        vit = " (a ViT block output [B, N, C]? reshape its patch tokens to a grid first)"
        raise ValueError(
            f"attention_map expects features [B, C, H, W], got shape {tuple(features.shape)}"
            + (vit if features.dim() == 3 else "")
        )
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be one of {', '.join(_REDUCE)}; got {reduce!r}")
    powered = at_least_fp32(features).abs().pow(p)  # [B, C, H, W]
    if reduce == "sum":
        maps = powered.sum(dim=1)
    elif reduce == "mean":
        maps = powered.mean(dim=1)
    else:
        maps = powered.amax(dim=1)
    if normalize:
        maps = F.normalize(maps.flatten(1), dim=1).view_as(maps)  # [B, H*W] -> [B, H, W]
    return maps


def _pooled(features: Tensor, size: tuple[int, int]) -> Tensor:
    """Features average-pooled to ``size`` (H, W) when they are larger."""
    return features if tuple(features.shape[-2:]) == size else F.adaptive_avg_pool2d(features, size)


def teacher_map(
    teacher_features: Tensor, student_size: tuple[int, int], p: float = 2, reduce: str = "mean"
) -> Tensor:
    """The teacher's normalized map as :func:`at_loss` compares it with a student's.

    When the two feature maps differ in size, the larger is average-pooled to the smaller
    first; this is the teacher's side of that: pooled to ``min(teacher, student)`` size,
    then :func:`attention_map`. [B, C, H, W] -> [B, h, w].
    """
    size = tuple(min(t, s) for t, s in zip(teacher_features.shape[-2:], student_size))
    return attention_map(_pooled(teacher_features.detach(), size), p, reduce)


def _map_distance(
    student_features: Tensor, target: Tensor, p: float, mode: str, reduce: str
) -> Tensor:
    """The AT loss of one pair from the student's features and the teacher's map."""
    student = _pooled(student_features, tuple(target.shape[-2:]))
    diff = (attention_map(student, p, reduce) - target).flatten(1)  # [B, H*W]
    if mode == "code":
        return diff.pow(2).mean()
    return diff.norm(p=p, dim=1).mean()


def at_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    p: float = 2,
    mode: str = "code",
    reduce: str = "mean",
) -> Tensor:
    """Attention-transfer loss of one layer pair.

    Both feature tensors become normalized attention maps Q / ||Q||_2 (flattened,
    :func:`attention_map`); their difference d, [B, H*W], is then reduced:

    - ``"code"``: the reference implementation, ``mean_{b, i} d[b, i]^2``
      (mean over the batch and the H*W positions of the squared difference);
    - ``"paper"``: Eq. 2's term, ``mean_b ||d[b]||_p`` (the L_p norm, not squared,
      averaged over the batch). The paper uses one letter, p, for the power of |A| and the
      norm type, and sets both to 2; so does this function. Eq. 2's ``beta / 2`` is not
      applied here: it is the method's weight (:class:`AT`).

    Args:
        student_features: [B, C_s, H_s, W_s], in the autograd graph.
        teacher_features: [B, C_t, H_t, W_t], treated as constants (detached). Channel
            counts may differ: the maps are per position.
        p: power of |A| in the map (and, in paper mode, the norm type).
        mode: ``"code"`` or ``"paper"``.
        reduce: channel reduction of the map (:func:`attention_map`).

    Returns:
        A scalar. When H and W differ, the larger features are average-pooled
        (``adaptive_avg_pool2d``) to the smaller size before the maps are taken.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
    if student_features.dim() != 4 or teacher_features.dim() != 4:
        raise ValueError(
            "at_loss expects features [B, C, H, W], got "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"batch sizes differ: student {student_features.shape[0]}, "
            f"teacher {teacher_features.shape[0]}"
        )
    target = teacher_map(teacher_features, tuple(student_features.shape[-2:]), p, reduce)
    return _map_distance(student_features, target, p, mode, reduce)


def _layer_list(layers: Sequence[str] | str) -> list[str]:
    return [layers] if isinstance(layers, str) else list(layers)


@register("at")
class AT(Distiller):
    """Activation-based attention transfer: ``CE + w * sum_j at_loss_j``.

    Layer pairs j default to each model's ``tap_points(model, "groups")`` (for a WRN the
    outputs of group0..group2, the pre-activation residual stream). One forward of the
    student and one of the teacher (under ``no_grad``) are read through
    :class:`~atcourse.models.Taps`.

    Weights: ``"ce"`` 1; ``"at"`` ``beta`` in code mode, ``beta / 2`` in paper mode (Eq. 2
    writes ``beta / 2``).

    Default beta: 1e3 in code mode (the reference implementation's); 2.5 in paper mode,
    the value at which the paper form weighs what code mode weighs at the distances a
    student reaches under AT (notebook 02 derives and measures it; ``docs/calibration.md``
    keeps the run). The paper's "about 0.1" belongs to a squared norm summed over the
    batch, the code's form, not to Eq. 2 as written.

    Args:
        student, teacher: the networks (the teacher is frozen here).
        beta: weight of the AT term (None: 1e3 in code mode, 2.5 in paper mode).
        p: power of |A| (and the norm type in paper mode).
        mode: ``"code"`` or ``"paper"`` (:func:`at_loss`).
        reduce: channel reduction of the maps (``"sum"``/``"mean"`` coincide once
            normalized; ``"max"`` differs).
        layers: student layer names (None: its ``"groups"`` tap points).
        teacher_layers: teacher layer names, paired in order with ``layers`` (None: the
            same names as ``layers`` when those were given, else the teacher's
            ``"groups"`` tap points).
        log_layers: also report each pair's loss as the diagnostic ``"at/<student layer>"``.

    Loss terms: ``"ce"`` and ``"at"`` (sum over layer pairs); diagnostics, with
    ``log_layers``: one ``"at/<layer>"`` per pair.
    """

    name = "at"
    knobs: ClassVar[dict[str, Param]] = {
        "beta": Param(
            float, "weight of the AT term (None: 1e3 in code mode, 2.5 in paper mode)", min=0.0
        ),
        "p": Param(float, "the power p in |A|^p of the attention maps", min=0.5),
        "at_mode": Param(
            str, "AT loss form: the reference code's or the paper's Eq. 2",
            choices=("code", "paper"), arg="mode",
        ),
        "reduce": Param(
            str, "how channels are reduced into a map", choices=("sum", "mean", "max")
        ),
    }  # fmt: skip

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        beta: float | None = None,
        p: float = 2.0,
        mode: str = "code",
        reduce: str = "mean",
        layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        log_layers: bool = True,
    ):
        # Everything is checked before the base class freezes the teacher, so a bad
        # argument leaves both models as they were.
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
        if reduce not in _REDUCE:
            raise ValueError(f"reduce must be one of {', '.join(_REDUCE)}; got {reduce!r}")
        if beta is not None and beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        s_layers = _layer_list(layers) if layers is not None else tap_points(student, "groups")
        if teacher_layers is not None:
            t_layers = _layer_list(teacher_layers)
        else:
            t_layers = list(s_layers) if layers is not None else tap_points(teacher, "groups")
        if len(s_layers) != len(t_layers) or not s_layers:
            raise ValueError(
                "AT pairs student and teacher layers one to one, but got "
                f"{len(s_layers)} student layers {s_layers} and "
                f"{len(t_layers)} teacher layers {t_layers}; pass "
                "layers=[...] and teacher_layers=[...] of the same length"
            )
        Taps(student, s_layers).remove()  # a misspelt name fails here, with suggestions
        Taps(teacher, t_layers).remove()
        super().__init__(student, teacher)
        self.layers, self.teacher_layers = s_layers, t_layers
        default = CODE_BETA if mode == "code" else PAPER_BETA
        self.beta = float(default if beta is None else beta)
        self.p = float(p)
        self.mode = mode
        self.reduce = reduce
        self.log_layers = log_layers

    @property
    def at_weight(self) -> float:
        """Weight of the "at" term in the total: beta (code) or beta / 2 (paper, Eq. 2)."""
        return self.beta if self.mode == "code" else self.beta / 2

    def _student_forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        with Taps(self.student, self.layers) as taps:
            logits = self.student(images)
        return logits, [taps[name] for name in self.layers]

    def _teacher_targets(
        self, images: Tensor, student_feats: list[Tensor], with_logits: bool = False
    ) -> tuple[Tensor | None, list[Tensor]]:
        """(teacher logits or None, the teacher's maps as each pair's loss compares them)."""
        sizes = [tuple(f.shape[-2:]) for f in student_feats]
        names = [f"at_map/{t}/{h}x{w}/p{self.p:g}/{self.reduce}"
                 for t, (h, w) in zip(self.teacher_layers, sizes)]  # fmt: skip

        def compute() -> dict[str, Tensor]:
            if with_logits:
                logits, feats = forward_with_taps(self.teacher, images, self.teacher_layers)
            else:  # the maps need no more of the teacher than its last tapped layer
                logits, feats = None, forward_until(self.teacher, images, self.teacher_layers)
            out = {name: teacher_map(feats[t], size, self.p, self.reduce)
                   for name, t, size in zip(names, self.teacher_layers, sizes)}  # fmt: skip
            return {**out, "logits": logits} if with_logits else out

        got = self.teacher_outputs([*names, *(["logits"] if with_logits else [])], compute)
        return got.get("logits"), [got[n] for n in names]

    def _at_term(
        self, student_feats: list[Tensor], teacher_maps: list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The summed AT term and, with ``log_layers``, each pair's as a diagnostic."""
        per_layer = [
            _map_distance(s, t, self.p, self.mode, self.reduce)
            for s, t in zip(student_feats, teacher_maps, strict=True)
        ]
        diagnostics = {}
        if self.log_layers:
            diagnostics = {
                f"at/{name}": value.detach()
                for name, value in zip(self.layers, per_layer, strict=True)
            }
        return torch.stack(per_layer).sum(), diagnostics

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images [B, 3, H, W], labels [B] -> student logits [B, K] and {"ce", "at"}."""
        logits, student_feats = self._student_forward(images)
        _, teacher_maps = self._teacher_targets(images, student_feats)
        at, diagnostics = self._at_term(student_feats, teacher_maps)
        terms = {"ce": F.cross_entropy(logits, labels), "at": at}
        return DistillOutput(logits, terms, {"ce": 1.0, "at": self.at_weight}, diagnostics)

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "p": self.p, "mode": self.mode, "reduce": self.reduce,
                "layers": list(self.layers),
                "teacher_layers": list(self.teacher_layers)}  # fmt: skip


@torch.no_grad()
def attention_maps(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | str | None = None,
    p: float = 2,
    reduce: str = "mean",
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Attention maps of a model's layers for a batch of images, for figures and metrics.

    Runs one forward in eval mode under ``no_grad`` (the model's mode is restored).

    Args:
        model: any network taking ``images``.
        images: [B, 3, H, W] (on the model's device).
        layers: layer names (None: the model's ``"groups"`` tap points).
        p, reduce, normalize: as in :func:`attention_map`.

    Returns:
        ``{layer: [B, H_l, W_l]}`` in the order of ``layers``.
    """
    names = tap_points(model, "groups") if layers is None else _layer_list(layers)
    with eval_mode(model), Taps(model, names, detach=True) as taps:
        model(images)
    return {name: attention_map(taps[name], p, reduce, normalize) for name in names}


def attention_alignment(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    layers: Sequence[str] | str | None = None,
    p: float = 2,
    reduce: str = "mean",
) -> dict[str, Tensor]:
    """Share of each layer's attention mass that falls on the object, per image.

    Uses un-normalized maps: :func:`~atcourse.metrics.mask_alignment` is a ratio
    (mass on the object / total mass), so any per-image scale, the L2 normalization
    included, cancels; skipping it avoids an eps that would matter only for all-zero maps.

    Args:
        model: any network taking ``images``.
        images: [B, 3, H, W].
        masks: object masks [B, H, W] (bool), pooled to each map's size.
        layers: layer names (None: the model's ``"groups"`` tap points).
        p, reduce: as in :func:`attention_map`.

    Returns:
        ``{layer: [B]}``, values in [0, 1] (1: all attention on the object).
    """
    maps = attention_maps(model, images, layers, p=p, reduce=reduce, normalize=False)
    masks = masks.to(images.device)
    return {name: mask_alignment(m, masks) for name, m in maps.items()}
