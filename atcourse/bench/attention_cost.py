"""The cost of reading attention maps: a ViT step with the fused kernel vs explicit maps.

Attention probabilities cannot be read out of the fused ``scaled_dot_product_attention``
kernel; attention transfer computes them explicitly in the transferred layers
(:class:`~atcourse.models.vit.Attention`). :func:`materialization_cost` measures what that
costs in time and in memory kept for the backward pass (notebook 06).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..models.vit_maps import attention_layers, resolve_layers

__all__ = ["materialization_cost"]


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
