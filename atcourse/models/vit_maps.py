"""Reading a ViT's attention: which layers, the probabilities it uses, CLS maps, rollout.

Attention transfer (:mod:`atcourse.distill.vit_attention`) and the figures of notebook 06
read the same things off a :class:`~atcourse.models.vit.VisionTransformer`: its attention
modules, a selection of its layers, the ``(B, heads, N, N)`` probabilities of those layers
on a batch, the CLS token's row as a patch grid, and the rollout through all layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..runtime import eval_mode
from .taps import Taps
from .vit import Attention

__all__ = [
    "attention_layers", "resolve_layers", "tap_names", "attention_probs", "cls_attention",
    "attention_rollout", "LAYER_WORDS",
]  # fmt: skip

#: Words a layer selection may use besides indices (:func:`resolve_layers`).
LAYER_WORDS = ("all", "early", "late")


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
                f"layers must be None, one of {', '.join(map(repr, LAYER_WORDS))}, or a list "
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


def tap_names(indices: Sequence[int], kind: str) -> list[str]:
    """The tap names of the attention ``kind`` (``"probs"``, ``"logits"``) of some blocks."""
    return [f"blocks.{i}.attn.{kind}" for i in indices]


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
        predict: what runs the forward pass, e.g. an
            :class:`~atcourse.distill.AttentionCopy`'s ``predict``, whose student then shows
            the teacher's maps in the copied layers (the maps it really uses). Default:
            ``model`` itself.

    Returns:
        ``{layer index: (B, heads, N, N)}``, rows summing to 1.
    """
    depth = len(attention_layers(model))
    indices = resolve_layers(layers, depth, list(range(depth)))
    names = tap_names(indices, "probs")
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
