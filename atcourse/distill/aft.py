"""AFD / AFT-KD: attention and feature transfer with adaptive loss weights.

Yang, Yu, Sheng, Yang, "Attention and feature transfer based knowledge distillation",
Scientific Reports 13:18369, 2023 (the paper calls the method AFT-KD). Its argument:
features (and logits) are the *outcome* of a network's reasoning, attention maps trace the
*process*, and the process lives before the final ReLU. So the method reads the
pre-activation features PreF of the last stage and builds, for teacher and student alike,
an attentional feature block (AFB)::

    CAM = Binary(Conv1x1(PreF))                 the "process" part, a spatial mask   (1)
    AFB = CAM + ReLU(PreF)                      the "outcome" part added to it       (2)
    L_AFD = || align(AFB_S) - align(AFB_T) ||^2 (mean squared error)                 (3)

and balances the two losses by how fast each decays, with L^0 the first epoch's losses::

    Dr_CE = L_CE / L^0_CE,   Dr_AFD = L_AFD / L^0_AFD
    alpha = Dr_CE / ((Dr_CE + Dr_AFD) / 2),   beta = Dr_AFD / ((Dr_CE + Dr_AFD) / 2)
    L = alpha * L_CE + beta * L_AFD                                                  (4)

The term that has fallen least (relative to where it started) gets the larger weight;
alpha + beta = 2 always. Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019) is the
documented relative (it uses the ratio of the last two epochs and a softmax).

No code was published and the full text gives no more detail than the above, so every
choice it leaves open is a named parameter of :class:`AFTKD` with the default justified
there: where the 1x1 convolution's weights come from (``cam_source``), the binarization
threshold (``threshold``) and whether gradients pass it (``gradient``), which class map
becomes the one-channel mask (``cam_class``) and how that mask meets the C feature
channels (``merge``), how teacher and student are aligned (``align``), and whether the
features are read before or after the ReLU (``source``, to test the paper's claim). The
equation numbers (1)-(4) are this module's and notebook 05's labels, not the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from ..models import Taps, forward_with_taps, tap_points
from ..models.cam_head import classifier_name
from .afb import (
    ALIGNS,
    GRADIENTS,
    MERGES,
    THRESHOLDS,
    afb_loss,
    align_features,
    binary_mask,
    check_choice,
    class_maps,
    merge_mask,
    pool_to,
)
from .base import Distiller, DistillOutput, at_least_fp32
from .cam import class_activation_maps
from .loss_weights import AdaptiveLossWeights
from .registry import register

__all__ = ["AFTKD", "CAM_SOURCES", "CAM_CLASSES", "SOURCES", "WEIGHTINGS"]

#: Where the 1x1 convolution's weights come from.
CAM_SOURCES = ("classifier", "learned")
#: Which class's map becomes the mask: the label's, or the teacher's top-1 class.
CAM_CLASSES = ("label", "teacher")
#: The features the block is built from: before the final ReLU, or after it.
SOURCES = ("preact", "features")
#: Loss weights: from the decay rates (4), or constant.
WEIGHTINGS = ("adaptive", "fixed")


def _classifier_name(model: nn.Module) -> str:
    """The model's ``"classifier"`` tap point, checked to hold a [K, C] weight."""
    name = classifier_name(model)
    weight = getattr(model.get_submodule(name), "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() not in (2, 4):
        raise ValueError(f"{type(model).__name__}.{name} has no [K, C] weight to build CAMs from")
    return name


@register("aft")
class AFTKD(Distiller):
    """AFD / AFT-KD: ``alpha * CE + beta * afb_loss`` on the last stage, Eq. (1)-(4).

    One student forward and one teacher forward (under ``no_grad``) per step; the
    features come through :class:`~atcourse.models.Taps` at the models' ``"preact"`` tap
    point (WRN: ``bn``, before the final ReLU; CIFAR ResNets: the last block's ``preact``)
    or ``"features"`` (after it). The classifier must read those features (the CAM is a
    1x1 convolution with its weights), so the block is built at the last stage only.

    Defaults, and why (the paper leaves these open; notebook 05 measures them, and
    ``docs/calibration.md`` keeps the runs behind each choice):

    - ``cam_source="classifier"``: the 1x1 convolution is the network's own classifier, as
      the name CAM (Zhou et al. 2016) says; it adds no parameters and gives the teacher a
      meaningful map. ``"learned"`` gives the student a separate ``nn.Conv2d(C_s, K, 1)``
      (a parameter of the method, initialized from the student's classifier) trained only
      by the AFB loss; it needs ``gradient="ste"``, since no gradient passes a hard step.
      The teacher keeps its classifier: a learned teacher-side map trained only to agree
      with the student could agree trivially (two all-zero masks).
    - ``threshold="mean_abs"``: the binarized CAM of the course's ``binarize_cams`` and of
      CAT-KD's exploration, the closest published binarization of a CAM.
    - ``gradient="none"``: Binary(.) as written is a step, whose gradient is zero; with
      ``"none"`` the student's mask is a constant, and the mask still teaches through the
      sum (where the teacher's mask is on and the student's is off, the target of the
      student's features rises by 1). ``"ste"`` (straight-through) lets the mask's error
      reach PreF at negative positions and the 1x1 convolution (clipped to one unit
      around the threshold; see :func:`binary_mask`). The literal reading is the default.
    - ``cam_class="label"``: the true class's map for teacher and student, known during
      training and the same for both, so the masks are comparable even where the teacher
      errs; ``"teacher"`` takes the teacher's top-1 class.
    - ``merge="add"``: Eq. (2) is a sum; adding the one-channel mask to each of the C
      channels (broadcast) is the only way that sum is defined. ``"concat"`` stacks it as
      one more channel, which makes it 1 / (C + 1) of the loss.
    - ``align="conv"``: a learned ``nn.Conv2d(C_s, C_t, 1)`` projects the student's
      features to the teacher's width (FitNets' regressor; identity when the widths
      agree); it is a parameter of the method. ``"pool"`` is the reading of the abstract's
      "block operations ... to save computation": average-pool the wider features'
      adjacent channels (and the larger map) down to the other's shape, no parameters;
      averaging the teacher's channels in fixed groups imposes an arbitrary correspondence
      the student must reproduce. Either way alignment acts on the feature part; the mask
      is one channel on both sides and needs none.
    - ``source="preact"``: the paper's point; ``"features"`` (after the ReLU) tests it.
      Only the mask changes: ReLU(PreF) is the post-activation map either way.
    - ``weighting="adaptive"``: Eq. (4) (:class:`~atcourse.distill.loss_weights.
      AdaptiveLossWeights`). ``"fixed"`` keeps ``fixed_weights`` (1, 1 by default: where
      the adaptive weights start, and stay when both terms decay alike).

    Args:
        student, teacher: the networks (the teacher is frozen here); both need a
            ``"classifier"`` tap point and the chosen ``source`` tap point.
        weighting: ``"adaptive"`` or ``"fixed"``.
        fixed_weights: (CE weight, AFD weight) when ``weighting="fixed"``.
        cam_source: ``"classifier"`` or ``"learned"``.
        threshold: ``"mean_abs"``, ``"mean"`` or ``"zero"`` (:func:`binary_mask`).
        gradient: ``"none"`` or ``"ste"``.
        merge: ``"add"`` or ``"concat"``.
        align: ``"pool"`` or ``"conv"``.
        source: ``"preact"`` or ``"features"``.
        cam_class: ``"label"`` or ``"teacher"``.
        layer, teacher_layer: override the tapped layer names (default: the ``source``
            tap point of each model); the layer must feed the classifier.

    Loss terms: ``"ce"`` (weight alpha) and ``"afd"`` (weight beta). Diagnostics (logged,
    not trained on): ``"afd/feat"`` (the MSE of the feature parts alone) and ``"afd/mask"``
    (the share of positions where the two binary masks disagree).
    """

    name = "aft"
    knobs: ClassVar[dict[str, Param]] = {
        "aft_weighting": Param(
            str, "loss weights from decay rates, or fixed", choices=WEIGHTINGS, arg="weighting"
        ),
        "aft_cam_source": Param(
            str, "the 1x1 conv of the CAM: the classifier's weights, or learned",
            choices=CAM_SOURCES, arg="cam_source",
        ),
        "aft_threshold": Param(
            str, "CAM binarization threshold per map", choices=THRESHOLDS, arg="threshold"
        ),
        "aft_gradient": Param(
            str, "gradient through the binarization: none, or straight-through",
            choices=GRADIENTS, arg="gradient",
        ),
        "aft_merge": Param(
            str, "one-channel mask and C channels: add to each, or concat", choices=MERGES,
            arg="merge",
        ),
        "aft_align": Param(
            str, "teacher/student widths: a learned 1x1 conv, or block pooling", choices=ALIGNS,
            arg="align",
        ),
        "aft_source": Param(
            str, "features before the final ReLU (preact) or after it (features)",
            choices=SOURCES, arg="source",
        ),
        "aft_cam_class": Param(
            str, "whose class map becomes the mask: the label's or the teacher's top-1",
            choices=CAM_CLASSES, arg="cam_class",
        ),
    }  # fmt: skip

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        weighting: str = "adaptive",
        fixed_weights: Sequence[float] = (1.0, 1.0),
        cam_source: str = "classifier",
        threshold: str = "mean_abs",
        gradient: str = "none",
        merge: str = "add",
        align: str = "conv",
        source: str = "preact",
        cam_class: str = "label",
        layer: str | None = None,
        teacher_layer: str | None = None,
    ):
        # Everything is checked before the base class freezes the teacher, so a bad
        # argument leaves both models as they were.
        for name, value, choices in (
            ("weighting", weighting, WEIGHTINGS),
            ("cam_source", cam_source, CAM_SOURCES),
            ("threshold", threshold, THRESHOLDS),
            ("gradient", gradient, GRADIENTS),
            ("merge", merge, MERGES),
            ("align", align, ALIGNS),
            ("source", source, SOURCES),
            ("cam_class", cam_class, CAM_CLASSES),
        ):
            check_choice(name, value, choices)
        if cam_source == "learned" and gradient != "ste":
            raise ValueError(
                "cam_source='learned' trains a 1x1 convolution through the mask, but with "
                "gradient='none' no gradient passes the binarization and it would never "
                "change: use gradient='ste', or cam_source='classifier'"
            )
        s_layer = layer if layer is not None else tap_points(student, source)[-1]
        t_layer = teacher_layer if teacher_layer is not None else tap_points(teacher, source)[-1]
        Taps(student, s_layer).remove()  # a misspelt name fails here, with suggestions
        Taps(teacher, t_layer).remove()
        s_fc, t_fc = _classifier_name(student), _classifier_name(teacher)
        s_classes, s_channels = student.get_submodule(s_fc).weight.shape[:2]
        t_classes, t_channels = teacher.get_submodule(t_fc).weight.shape[:2]
        if s_classes != t_classes:
            raise ValueError(
                f"student and teacher predict {s_classes} and {t_classes} classes; the masks "
                "compare class maps, so they must agree"
            )
        weights = AdaptiveLossWeights(
            ("ce", "afd"), adaptive=weighting == "adaptive", fixed=fixed_weights
        )
        super().__init__(student, teacher)
        self.layer, self.teacher_layer = s_layer, t_layer
        self.weighting, self.fixed_weights = weighting, tuple(float(w) for w in fixed_weights)
        self.cam_source, self.threshold, self.gradient = cam_source, threshold, gradient
        self.merge, self.align, self.source, self.cam_class = merge, align, source, cam_class
        self.loss_weights = weights
        self.classifier, self.teacher_classifier = s_fc, t_fc
        # Learned parts are submodules of the method: the trainer's optimizer updates them
        # (trainable_parameters) and checkpoints store them (trainable_state).
        self.cam_conv: nn.Conv2d | None = None
        if cam_source == "learned":
            self.cam_conv = nn.Conv2d(s_channels, s_classes, 1, bias=False)
            with torch.no_grad():
                fc_weight = student.get_submodule(s_fc).weight.detach()
                self.cam_conv.weight.copy_(fc_weight.view_as(self.cam_conv.weight))
        self.projection: nn.Conv2d | None = None
        if align == "conv" and s_channels != t_channels:
            self.projection = nn.Conv2d(s_channels, t_channels, 1, bias=False)

    # ----------------------------------------------------------------- state across epochs

    def on_epoch_end(self, epoch: int, summary: dict[str, float]) -> None:
        """Eq. (4): new alpha, beta from this epoch's mean losses (L^0 after the first)."""
        self.loss_weights.update(summary)

    def get_extra_state(self) -> dict[str, Any]:
        return {"loss_weights": self.loss_weights.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.loss_weights.load_state(state["loss_weights"])

    @property
    def alpha(self) -> float:
        """The current weight of the cross-entropy."""
        return self.loss_weights.weights["ce"]

    @property
    def beta(self) -> float:
        """The current weight of the AFB loss."""
        return self.loss_weights.weights["afd"]

    # ----------------------------------------------------------------- the blocks

    def student_cam_weight(self) -> Tensor:
        """The student's 1x1 convolution, [K, C_s]: its classifier, or the learned one."""
        if self.cam_conv is not None:
            return self.cam_conv.weight.flatten(1)
        return self.student.get_submodule(self.classifier).weight

    def teacher_cam_weight(self) -> Tensor:
        """The teacher's 1x1 convolution, [K, C_t]: always its classifier."""
        return self.teacher.get_submodule(self.teacher_classifier).weight

    def _teacher_targets(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(the teacher's tapped features, its logits) for this batch."""
        name = f"afd_source/{self.teacher_layer}"

        def compute() -> dict[str, Tensor]:
            logits, taps = forward_with_taps(self.teacher, images, [self.teacher_layer])
            return {name: taps[self.teacher_layer], "logits": logits}

        got = self.teacher_outputs([name, "logits"], compute)
        return got[name], got["logits"]

    def blocks(
        self, images: Tensor, labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """One student and one teacher forward; the aligned parts of both AFBs.

        Returns:
            (student logits [B, K], student parts, teacher parts); parts are
            ``{"features": [B, C', H', W'] aligned ReLU(PreF), "mask": [B, 1, H', W'],
            "afb": the merged block}``. The teacher's are constants.
        """
        with Taps(self.student, self.layer) as taps:
            logits = self.student(images)
        s_pre = taps[self.layer]
        t_pre, t_logits = self._teacher_targets(images)
        classes = labels if self.cam_class == "label" else t_logits.argmax(1)
        s_mask = binary_mask(
            class_maps(class_activation_maps(s_pre, self.student_cam_weight()), classes),
            self.threshold,
            self.gradient,
        )
        with torch.no_grad():
            t_mask = binary_mask(
                class_maps(class_activation_maps(t_pre, self.teacher_cam_weight()), classes),
                self.threshold,
            )
        s_feat, t_feat = align_features(F.relu(s_pre), F.relu(t_pre), self.projection)
        size = s_feat.shape[-2:]
        s_mask, t_mask = pool_to(s_mask, size), pool_to(t_mask, size)
        student = {
            "features": s_feat,
            "mask": s_mask,
            "afb": merge_mask(s_feat, s_mask, self.merge),
        }
        teacher = {
            "features": t_feat,
            "mask": t_mask,
            "afb": merge_mask(t_feat, t_mask, self.merge),
        }
        return logits, student, teacher

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images [B, 3, H, W], labels [B] -> logits [B, K], {"ce", "afd"} and diagnostics."""
        logits, student, teacher = self.blocks(images, labels)
        with torch.no_grad():
            feat = afb_loss(student["features"], teacher["features"])
            mask = at_least_fp32((student["mask"].detach() - teacher["mask"]).abs()).mean()
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "afd": afb_loss(student["afb"], teacher["afb"]),
        }
        diagnostics = {"afd/feat": feat, "afd/mask": mask}
        return DistillOutput(logits, terms, dict(self.loss_weights.weights), diagnostics)

    def hparams(self) -> dict[str, Any]:
        return {
            "weighting": self.weighting,
            "fixed_weights": list(self.fixed_weights),
            "cam_source": self.cam_source,
            "threshold": self.threshold,
            "gradient": self.gradient,
            "merge": self.merge,
            "align": self.align,
            "source": self.source,
            "cam_class": self.cam_class,
            "layer": self.layer,
            "teacher_layer": self.teacher_layer,
        }
