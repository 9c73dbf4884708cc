"""Model zoo for the course: WRNs, CIFAR ResNets, a small ViT, and layer taps.

``build(name)`` returns a freshly initialised model; every model carries ``model.arch`` (its
registry name) and ``model.tap_points`` (layer names per role, see :func:`tap_points`).

Names:

- ``wrn_<depth>_<width>``: pre-activation wide ResNet, depth ``6n+4`` (``wrn_16_1``,
  ``wrn_16_2``, ``wrn_16_4``, ``wrn_40_1``, ``wrn_40_2`` are the usual ones);
- ``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``, ``resnet8x4``, ``resnet32x4``:
  post-activation CIFAR ResNets;
- ``vit_tiny``, ``vit_small``: Vision Transformers with 4x4 patches on 32x32 images;
  ``vitc_micro``: a small ViT with a convolutional stem (same 8x8 token grid).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .cam_head import CAMHead, with_cam_head
from .resnet import BasicBlock, CifarResNet
from .taps import ROLES, TapNameError, Taps, forward_until, forward_with_taps, tap_points
from .vit import Attention, ConvStem, VisionTransformer
from .vit_maps import attention_probs, attention_rollout, cls_attention, resolve_layers
from .wrn import PreActBlock, WideResNet

__all__ = [
    "build",
    "check_name",
    "available",
    "count_parameters",
    "Taps",
    "TapNameError",
    "tap_points",
    "forward_with_taps",
    "forward_until",
    "ROLES",
    "WideResNet",
    "PreActBlock",
    "CifarResNet",
    "BasicBlock",
    "VisionTransformer",
    "Attention",
    "ConvStem",
    "VIT_CONFIGS",
    "CAMHead",
    "with_cam_head",
    "attention_probs",
    "attention_rollout",
    "cls_attention",
    "resolve_layers",
]

_WRN_PATTERN = re.compile(r"^wrn_(\d+)_(\d+)$")
_WRN_NAMES = ("wrn_16_1", "wrn_16_2", "wrn_16_4", "wrn_40_1", "wrn_40_2")

_CIFAR = (16, 16, 32, 64)
_CIFAR_X4 = (32, 64, 128, 256)
_RESNET_CONFIGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "resnet8x4": (8, _CIFAR_X4),
    "resnet32x4": (32, _CIFAR_X4),
    "resnet20": (20, _CIFAR),
    "resnet32": (32, _CIFAR),
    "resnet56": (56, _CIFAR),
    "resnet110": (110, _CIFAR),
}

#: Keyword arguments of :class:`VisionTransformer` per name; ``build`` kwargs override them.
VIT_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_tiny": {"patch_size": 4, "dim": 128, "depth": 6, "heads": 4, "mlp_ratio": 2.0},
    "vit_small": {"patch_size": 4, "dim": 192, "depth": 8, "heads": 6, "mlp_ratio": 3.0},
    # The course's ViT for a CPU (notebook 06): a convolutional stem (ViT_C, Xiao et al. 2021)
    # in front of 6 narrow blocks. On `shapes` a patchify ViT of this size was still near
    # chance after 750 steps where this one had left it; see the notebook for its speed.
    "vitc_micro": {
        "patch_size": 4, "dim": 64, "depth": 6, "heads": 4, "mlp_ratio": 2.0,
        "stem": "conv", "stem_width": 64,
    },
}  # fmt: skip


def _build_wrn(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    match = _WRN_PATTERN.match(name)
    assert match is not None
    depth, width = int(match.group(1)), int(match.group(2))
    return WideResNet(depth=depth, width=width, num_classes=num_classes, **kwargs)


def _build_resnet(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    depth, filters = _RESNET_CONFIGS[name]
    return CifarResNet(depth=depth, filters=filters, num_classes=num_classes, **kwargs)


def _build_vit(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    return VisionTransformer(num_classes=num_classes, **{**VIT_CONFIGS[name], **kwargs})


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{n: _build_wrn for n in _WRN_NAMES},
    **{n: _build_resnet for n in _RESNET_CONFIGS},
    **{n: _build_vit for n in VIT_CONFIGS},
}


def available() -> list[str]:
    """Registry names (any other ``wrn_<depth>_<width>`` with depth ``6n+4`` also builds)."""
    return list(_BUILDERS)


def check_name(name: str, *, what: str = "model") -> str:
    """``name`` in lower case if it names a buildable model, else a ValueError naming ``what``.

    Cheap (nothing is built): the command line checks its architectures before loading data.
    """
    key = str(name).lower()
    match = _WRN_PATTERN.match(key)
    if key in _BUILDERS or (
        match
        and int(match.group(1)) >= 10
        and (int(match.group(1)) - 4) % 6 == 0
        and int(match.group(2)) >= 1
    ):
        return key
    raise ValueError(
        f"{what} {name!r} is not a model: valid names are {', '.join(available())}, or "
        "'wrn_<depth>_<width>' with depth = 6n+4 >= 10 and width >= 1 (e.g. 'wrn_28_10')"
    )  # fmt: skip


def build(name: str, num_classes: int = 10, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """A freshly initialised model by registry name.

    Args:
        name: one of :func:`available`, or ``wrn_<depth>_<width>`` with depth ``6n+4``.
        num_classes: classifier outputs (10 for CIFAR-10, 100 for CIFAR-100).
        seed: initialise from this seed, whatever ran before (the global random state is
            left as it was); None draws from the global random state. The trainer, the
            zoo and the notebooks build every run's model with the run's seed, so the
            same command gives the same initial weights.
        **kwargs: passed to the model class (e.g. ``dropout=0.3`` for a WRN, ``depth=4`` to
            override a ViT preset).

    Returns:
        The model, mapping ``(B, 3, 32, 32)`` images to ``(B, num_classes)`` logits, with
        ``model.arch == name`` and ``model.tap_points`` set.

    Raises:
        ValueError: for an unknown name.
    """
    key = name.lower()
    builder = _BUILDERS.get(key)
    if builder is None and _WRN_PATTERN.match(key):
        builder = _build_wrn
    if builder is None:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(available())}, "
            "or any 'wrn_<depth>_<width>' with depth = 6n+4 (e.g. 'wrn_28_10')"
        )
    if seed is None:
        model = builder(key, num_classes, **kwargs)
    else:
        # the draws seed_everything(seed) followed by a build would make, with no side effect
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(key, num_classes, **kwargs)
    model.arch = key
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
