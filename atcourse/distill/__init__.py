"""Distillation methods: one module per method, all following one contract (base.py).

Each method registers under a short name (:mod:`atcourse.distill.registry`), so the command
line, the benchmark and the leaderboard can make any of them from a name::

    method = build_method("kd", student, teacher, alpha=0.9, T=4.0)

Below each method's class are plain functions on tensors (attention maps, losses) that the
notebooks show and test one by one; they are exported here.
"""

from __future__ import annotations

from .base import Baseline, Distiller, DistillOutput, freeze
from .registry import (
    METHODS,
    MethodSpec,
    build_method,
    hparams_from_config,
    register,
    unused_knobs,
)

register("baseline", teacher=False)(Baseline)

# Importing the method modules registers them.
# isort: split
from .afb import afb_loss, align_features, attentional_feature_block, binary_mask  # noqa: E402
from .aft import AFTKD  # noqa: E402
from .at_kd import ATKD  # noqa: E402
from .attention import (  # noqa: E402
    AT,
    at_loss,
    attention_alignment,
    attention_map,
    attention_maps,
)
from .cam import (  # noqa: E402
    binarize_cams,
    cam_alignment,
    check_cam_identity,
    class_activation_maps,
    forward_cams,
)
from .cat_kd import CAT_KD_PAIRS, CATKD, cat_loss, select_classes  # noqa: E402
from .finetune import FineTune  # noqa: E402
from .gradient import (  # noqa: E402
    GradientAT,
    flip_invariance_loss,
    gradient_at_loss,
    gradient_attention_map,
    input_gradient,
)
from .kd import KD, kd_loss  # noqa: E402
from .loss_weights import AdaptiveLossWeights, loss_decay_weights  # noqa: E402
from .vit_attention import (  # noqa: E402
    AttentionCopy,
    AttentionDistillation,
    attention_distillation_loss,
)

__all__ = [
    "Baseline", "DistillOutput", "Distiller", "freeze",
    "METHODS", "MethodSpec", "register", "build_method", "hparams_from_config", "unused_knobs",
    "KD", "kd_loss",
    "AT", "ATKD", "at_loss", "attention_map", "attention_maps", "attention_alignment",
    "GradientAT", "input_gradient", "gradient_attention_map", "gradient_at_loss",
    "flip_invariance_loss",
    "class_activation_maps", "binarize_cams", "forward_cams", "check_cam_identity",
    "cam_alignment",
    "CATKD", "CAT_KD_PAIRS", "cat_loss", "select_classes",
    "AFTKD", "attentional_feature_block", "binary_mask", "align_features", "afb_loss",
    "AdaptiveLossWeights", "loss_decay_weights",
    "AttentionDistillation", "AttentionCopy", "attention_distillation_loss",
    "FineTune",
]  # fmt: skip
