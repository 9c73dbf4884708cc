"""Figures: image grids with masks, attention overlays, training curves, bar charts.

Every function takes tensors or plain lists, returns the matplotlib ``Figure`` and draws
nothing else, so the same calls serve notebooks, widgets and saved reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["image_grid", "overlay", "plot_history", "bar_chart", "to_rgb"]

#: Colours per method, so every notebook draws a method in the same colour.
METHOD_COLORS = {
    "teacher": "#4c4c4c", "baseline": "#8da0cb", "kd": "#fc8d62", "at": "#66c2a5",
    "at+kd": "#e78ac3", "gradient_at": "#a6d854", "cat_kd": "#ffd92f", "aft": "#e5c494",
    "gradient_at_flip": "#4d9221", "flip": "#4d9221",
    # ViT attention transfer (notebook 06)
    "scratch": "#8da0cb", "fine-tune": "#b15928", "finetune": "#b15928",
    "attn_copy": "#1f78b4", "attn_distill": "#33a02c",
    "cat_kd_bin": "#a6761d",
}  # fmt: skip


def to_rgb(image: Tensor) -> Tensor:
    """[3,H,W] uint8 or float in [0,1] -> [H,W,3] float in [0,1] (CPU), for imshow."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    return image.clamp(0, 1).permute(1, 2, 0)


def image_grid(
    images: Tensor,
    labels: Sequence[int] | Tensor | None = None,
    classes: Sequence[str] | None = None,
    *,
    masks: Tensor | None = None,
    ncols: int = 8,
    scale: float = 1.4,
    title: str | None = None,
) -> Figure:
    """A grid of images [N,3,H,W] with their class names; masks [N,H,W] outlined in white."""
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(to_rgb(images[i]), interpolation="nearest")
        if masks is not None:
            ax.contour(masks[i].cpu().float().numpy(), levels=[0.5], colors="white", linewidths=0.8)
        if labels is not None:
            label = int(labels[i])
            ax.set_title(classes[label] if classes else str(label), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def overlay(
    ax: Any,
    image: Tensor,
    heat: Tensor,
    *,
    alpha: float = 0.55,
    cmap: str = "jet",
    title: str | None = None,
) -> None:
    """Draw ``heat`` [h,w] (upsampled bilinearly) over ``image`` [3,H,W] on one axis."""
    rgb = to_rgb(image)
    heat = heat.detach().float().cpu()
    if heat.shape != rgb.shape[:2]:
        heat = torch.nn.functional.interpolate(
            heat[None, None], size=rgb.shape[:2], mode="bilinear", align_corners=False
        )[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    ax.imshow(rgb, interpolation="nearest")
    ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def plot_history(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("loss_total", "test_acc"),
    *,
    titles: Sequence[str] | None = None,
    percent: Sequence[str] = ("test_acc", "train_acc"),
) -> Figure:
    """One panel per key, one line per run: ``{"KD": result.history, ...}``."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key, title in zip(axes.flat, keys, titles or keys):
        for label, history in histories.items():
            xs = [row["epoch"] for row in history if key in row]
            ys = [row[key] * (100 if key in percent else 1) for row in history if key in row]
            color = METHOD_COLORS.get(label.lower())
            ax.plot(xs, ys, marker="o", markersize=3, label=label, color=color)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        if key in percent:
            ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def bar_chart(
    values: Mapping[str, float],
    *,
    ylabel: str = "",
    title: str = "",
    errors: Mapping[str, float] | None = None,
    fmt: str = "{:.1f}",
    reference: float | None = None,
    reference_label: str = "",
) -> Figure:
    """Bars with their values written on top; an optional dashed reference line."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.0, 3.2))
    colors = [METHOD_COLORS.get(n.lower(), "#8da0cb") for n in names]
    yerr = [errors.get(n, 0.0) for n in names] if errors else None
    bars = ax.bar(names, [values[n] for n in names], color=colors, yerr=yerr, capsize=3)
    for bar, name in zip(bars, names):
        top = bar.get_height() + (errors.get(name, 0.0) if errors else 0.0)  # above the cap
        ax.annotate(
            fmt.format(values[name]),
            (bar.get_x() + bar.get_width() / 2, top),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if reference is not None:
        ax.axhline(reference, ls="--", color="gray", lw=1, label=reference_label)
        if reference_label:
            ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
