"""Distillation methods: one module per method, all following one contract (base.py).

Methods register a builder under a short name, so the command line, the benchmarks and
the leaderboard can make any of them from a name::

    method = build_method("kd", student, teacher, alpha=0.9, T=4.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .base import Baseline, Distiller, DistillOutput, freeze

__all__ = [
    "Baseline",
    "DistillOutput",
    "Distiller",
    "freeze",
    "METHODS",
    "register",
    "build_method",
    "hparams_from_config",
]

#: name -> builder(student, teacher, **hparams) -> Distiller
METHODS: dict[str, Callable[..., Distiller]] = {}


def register(name: str, *, needs_teacher: bool = True):
    """Class decorator: make a Distiller buildable by ``build_method(name, ...)``."""

    def deco(cls):
        def builder(student: nn.Module, teacher: nn.Module | None = None, **hparams: Any):
            if needs_teacher and teacher is None:
                raise ValueError(f"method {name!r} needs a teacher; pass teacher=...")
            return cls(student, teacher, **hparams) if needs_teacher else cls(student, **hparams)

        builder.needs_teacher = needs_teacher  # type: ignore[attr-defined]
        builder.cls = cls  # type: ignore[attr-defined]
        METHODS[name] = builder
        return cls

    return deco


def build_method(
    name: str, student: nn.Module, teacher: nn.Module | None = None, **hparams: Any
) -> Distiller:
    """Build a registered method by name; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](student, teacher, **hparams)


#: configuration names whose constructor argument is named differently
_CONFIG_ALIASES = {"mode": "at_mode"}


def hparams_from_config(name: str, cfg: Any) -> dict[str, Any]:
    """The keyword arguments of method ``name`` that ``cfg`` sets (None values skipped).

    Maps constructor arguments to configuration names (``mode`` <- ``at_mode``, and a
    method's own ``config_names``), so a notebook or the command line can build any
    method from one validated config.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    import inspect

    cls = METHODS[name].cls
    params = inspect.signature(cls).parameters
    # a method may name its own configuration keys (``config_names``: argument -> key)
    aliases = {**_CONFIG_ALIASES, **getattr(cls, "config_names", {})}
    kwargs = {}
    for arg, param in params.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        key = aliases.get(arg, arg)
        if key in cfg and cfg[key] is not None:
            kwargs[arg] = cfg[key]
    return kwargs


register("baseline", needs_teacher=False)(Baseline)

# Importing the method modules registers them (they use ``register`` defined above).
from .attention import AT as AT  # noqa: E402
from .attention import ATKD as ATKD  # noqa: E402
from .attention import at_loss as at_loss  # noqa: E402
from .attention import attention_alignment as attention_alignment  # noqa: E402
from .attention import attention_map as attention_map  # noqa: E402
from .attention import attention_maps as attention_maps  # noqa: E402
from .kd import KD as KD  # noqa: E402
from .kd import kd_loss as kd_loss  # noqa: E402

# isort: split
from .gradient import GradientAT as GradientAT  # noqa: E402
from .gradient import flip_invariance_loss as flip_invariance_loss  # noqa: E402
from .gradient import gradient_at_loss as gradient_at_loss  # noqa: E402
from .gradient import gradient_attention_map as gradient_attention_map  # noqa: E402
from .gradient import input_gradient as input_gradient  # noqa: E402

# isort: split
from .cam import binarize_cams as binarize_cams  # noqa: E402
from .cam import class_activation_maps as class_activation_maps  # noqa: E402

# isort: split
from .vit_attention import AttentionCopy as AttentionCopy  # noqa: E402
from .vit_attention import AttentionDistillation as AttentionDistillation  # noqa: E402
from .vit_attention import FineTune as FineTune  # noqa: E402
from .vit_attention import attention_distillation_loss as attention_distillation_loss  # noqa: E402
from .vit_attention import attention_rollout as attention_rollout  # noqa: E402

# isort: split
from .cam import CAT_KD_PAIRS as CAT_KD_PAIRS  # noqa: E402
from .cam import CATKD as CATKD  # noqa: E402
from .cam import CAMHead as CAMHead  # noqa: E402
from .cam import cam_alignment as cam_alignment  # noqa: E402
from .cam import cat_loss as cat_loss  # noqa: E402
from .cam import check_cam_identity as check_cam_identity  # noqa: E402
from .cam import forward_cams as forward_cams  # noqa: E402
from .cam import select_classes as select_classes  # noqa: E402
from .cam import with_cam_head as with_cam_head  # noqa: E402

# isort: split
from .aft import AFTKD as AFTKD  # noqa: E402
from .aft import AdaptiveLossWeights as AdaptiveLossWeights  # noqa: E402
from .aft import afb_loss as afb_loss  # noqa: E402
from .aft import align_features as align_features  # noqa: E402
from .aft import attentional_feature_block as attentional_feature_block  # noqa: E402
from .aft import binary_mask as binary_mask  # noqa: E402
from .aft import loss_decay_weights as loss_decay_weights  # noqa: E402
