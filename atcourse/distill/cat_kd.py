"""Class attention transfer (CAT-KD): transfer the teacher's class activation maps.

Guo, Yan, Li, Lin, "Class Attention Transfer Based Knowledge Distillation", CVPR 2023.
Teacher and student both get a classifier that is a bias-free 1x1 convolution
(:class:`~atcourse.models.cam_head.CAMHead`), so that a network computes its class
activation maps (:mod:`atcourse.distill.cam`) and its logits are their averages; the
student is trained with

    L = CE(z_S, y) + beta * CAT,   CAT = MSE(pool_R(CAM_S), pool_R(CAM_T))

(:func:`cat_loss`, :class:`CATKD`), with no logit-KD term. Where the paper is terse, this
module follows the authors' public code (GzyAftermath/CAT-KD, built on mdistiller); each
function says which of its choices it follows and where it departs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Param
from ..models import Taps
from ..models.cam_head import CAMHead, classifier_name, features_name, with_cam_head
from .base import Distiller, DistillOutput, at_least_fp32
from .cam import binarize_cams, forward_cams
from .registry import register

__all__ = [
    "cat_loss",
    "select_classes",
    "CATKD",
    "CAT_KD_PAIRS",
    "DEFAULT_BETA",
    "DEFAULT_NORMALIZED_BETA",
    "CATPair",
]

_SELECTIONS = ("top", "bottom")


def cat_loss(
    student_cams: Tensor, teacher_cams: Tensor, pool: int = 2, normalize: bool = False
) -> Tensor:
    """Class attention transfer loss: the MSE of CAMs average-pooled to ``pool`` x ``pool``.

    ``CAT = mean_{b, k, i, j} (P(CAM_S)[b, k, i, j] - P(CAM_T)[b, k, i, j])^2`` with P the
    adaptive average pooling to R x R (R = ``pool``); with ``normalize``, each pooled class
    map is first divided by its L2 norm over its R*R cells. This is the reference code's
    ``CAT_loss`` (pool, optionally normalize, ``F.mse_loss``): a mean over the batch, the
    classes and the cells, so its value does not grow with K or R.

    What the pooling keeps: the mean of a class map's R*R cells is the class's (bias-free)
    logit, so without normalization

        CAT = mean_{b,k} (z_S - z_T)^2 + mean_{b,k,i,j} (r_S - r_T)^2,

    r = P(CAM) - z the cells' deviations from their mean: a logit-matching term plus a
    coarse-layout term. At R = 1 only the first is left (an L2 logit loss); larger R keeps
    finer layout. Normalization removes each map's scale and with it most of the logit
    term.

    Args:
        student_cams: [B, K, H_s, W_s], in the autograd graph.
        teacher_cams: [B, K, H_t, W_t], a constant target (detached). H and W may differ
            from the student's: both are pooled to R x R. When H is not a multiple of R,
            adaptive pooling's windows overlap by a row or column.
        pool: R, at least 1 and at most the smaller map's height and width (2 in every
            CIFAR-100 configuration of the reference except the ShuffleNet students, 4).
        normalize: L2-normalize each pooled class map (the reference's ``IF_NORMALIZE``).

    Returns:
        A scalar in the CAMs' dtype, at least float32 (bf16/fp16 CAMs are upcast before
        pooling).
    """
    if student_cams.dim() != 4 or teacher_cams.dim() != 4:
        raise ValueError(
            "cat_loss expects CAMs [B, K, H, W], got "
            f"{tuple(student_cams.shape)} and {tuple(teacher_cams.shape)}"
        )
    if student_cams.shape[:2] != teacher_cams.shape[:2]:
        raise ValueError(
            f"student and teacher CAMs must agree in batch and classes [B, K], got "
            f"{tuple(student_cams.shape[:2])} and {tuple(teacher_cams.shape[:2])}: both "
            "networks must classify the same K classes (and the same class subset)"
        )
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool (R) must be a positive integer, got {pool!r}")
    smallest = min(*student_cams.shape[-2:], *teacher_cams.shape[-2:])
    if pool > smallest:
        raise ValueError(
            f"pool = {pool} is larger than the CAMs ({tuple(student_cams.shape[-2:])} student, "
            f"{tuple(teacher_cams.shape[-2:])} teacher): pooling would copy cells, not "
            f"average them; use pool <= {smallest}"
        )
    student = F.adaptive_avg_pool2d(at_least_fp32(student_cams), pool)  # [B, K, R, R]
    teacher = F.adaptive_avg_pool2d(at_least_fp32(teacher_cams.detach()), pool)
    if normalize:
        student = F.normalize(student.flatten(2), dim=2).view_as(student)
        teacher = F.normalize(teacher.flatten(2), dim=2).view_as(teacher)
    return (student - teacher).pow(2).mean()


def select_classes(teacher_logits: Tensor, n: int, strategy: str = "top") -> Tensor:
    """The indices of the ``n`` classes whose CAMs are transferred, per image: [B, n].

    ``"top"``: the n classes the teacher scores highest; ``"bottom"``: the n lowest. The
    reference code's partial-class experiment ranks by the converted (bias-free) teacher's
    logits, as :class:`CATKD` does. It selects the classes above the n-th largest logit
    (strictly, so n - 1 classes) for "top", and those at or below the (K - n)-th largest
    with K fixed at 100 (n + 1 classes) for "bottom"; this function takes exactly n
    (``torch.topk``; ties go to the lower index).

    Args:
        teacher_logits: [B, K]; n: 1 <= n <= K; strategy: ``"top"`` or ``"bottom"``.
    """
    if strategy not in _SELECTIONS:
        raise ValueError(f"strategy must be one of {', '.join(_SELECTIONS)}; got {strategy!r}")
    k = teacher_logits.shape[-1]
    if not 1 <= n <= k:
        raise ValueError(f"the number of transferred classes must lie in [1, {k}], got {n}")
    return teacher_logits.detach().topk(n, dim=1, largest=strategy == "top").indices


def _gather_classes(cams: Tensor, index: Tensor) -> Tensor:
    """cams [B, K, H, W], index [B, n] -> the selected maps [B, n, H, W]."""
    return cams.gather(1, index[:, :, None, None].expand(-1, -1, *cams.shape[-2:]))


#: Default beta without normalization, set on ``shapes`` (see :class:`CATKD`, "Default beta").
DEFAULT_BETA = 0.1
#: Default beta with normalization (the binarized variant's default), set the same way.
DEFAULT_NORMALIZED_BETA = 10.0


@dataclass(frozen=True)
class CATPair:
    """One teacher -> student setting of the reference implementation's configurations.

    Attributes:
        beta: weight of the CAT term (``CAT_loss_weight``).
        resolution: R, the pooled CAM size (``CAM_RESOLUTION``).
        normalize: L2-normalize the pooled maps (``IF_NORMALIZE``).
        lr: the configuration's learning rate (0.05, or 0.01 for ShuffleNet/MobileNet
            students on CIFAR-100).
        dataset: where these values were tuned.
    """

    beta: float
    resolution: int = 2
    normalize: bool = False
    lr: float = 0.05
    dataset: str = "cifar100"


#: The reference configurations (GzyAftermath/CAT-KD, ``configs/*/CAT_KD``), by
#: ``"teacher/student"``. Architectures the course does not build keep the reference's
#: names; the ImageNet ones are prefixed ``imagenet:``. CIFAR-100 recipe: 240 epochs,
#: batch 64, SGD momentum 0.9, weight decay 5e-4, lr x 0.1 at epochs 150, 180, 210.
CAT_KD_PAIRS: dict[str, CATPair] = {
    "resnet32x4/resnet8x4": CATPair(15.0),
    "resnet56/resnet20": CATPair(0.7),
    "resnet110/resnet32": CATPair(1.8),
    "wrn_40_2/wrn_16_2": CATPair(12.0),
    "wrn_40_2/wrn_40_1": CATPair(1.5),
    "vgg13/vgg8": CATPair(4.5),
    "resnet32x4/ShuffleV1": CATPair(600.0, 4, True, 0.01),
    "resnet32x4/ShuffleV2": CATPair(600.0, 4, True, 0.01),
    "wrn_40_2/ShuffleV1": CATPair(80.0, 4, True, 0.01),
    "ResNet50/MobileNetV2": CATPair(40.0, 2, True, 0.01),
    "vgg13/MobileNetV2": CATPair(15.0, 2, True, 0.01),
    "imagenet:ResNet34/ResNet18": CATPair(0.5, 4, False, 0.2, "imagenet"),
    "imagenet:ResNet50/MobileNetV2": CATPair(10.0, 2, True, 0.2, "imagenet"),
}


def default_beta(normalize: bool) -> float:
    """The course's default beta on ``shapes``: :data:`DEFAULT_BETA` or the normalized one."""
    return DEFAULT_NORMALIZED_BETA if normalize else DEFAULT_BETA


@register("cat_kd")
@register("cat_kd_bin", fixed={"cam_binarize": True})
class CATKD(Distiller):
    """CAT-KD: ``CE(z_S, y) + beta * cat_loss(CAM_S, CAM_T)``, no logit-KD term.

    Both networks get a bias-free 1x1-convolution classifier (:func:`with_cam_head`): the
    student is converted in place (it is trained with that head, and its logits, the
    CAMs' averages, are what it predicts with); the teacher is converted as a copy, so a
    teacher shared with other methods keeps its bias. CAMs are read, as in the reference,
    from the last feature map, the one the classifier sees after global average pooling
    (the ``"features"`` tap point), with one forward of each network per step (the
    teacher's under ``no_grad``).

    Options, each following the reference implementation:

    - ``cam_resolution`` (R): the pooled size, 2 unless a ``cat_pair`` says otherwise;
    - ``cam_normalize``: L2-normalize each pooled class map;
    - ``cam_binarize``: the binarized variant (an exploration in the paper): the
      *teacher's* full-resolution CAMs become 1 above their mean absolute value and 0
      elsewhere (:func:`binarize_cams`) before pooling; the student's stay continuous. The
      target then carries where, not how strongly, so normalization is on by default (as in
      the reference's binarization configuration), and the method is registered and
      named ``"cat_kd_bin"`` in run records and tables;
    - ``cam_classes`` / ``cam_selection``: transfer only the maps of the n classes the
      teacher scores highest (``"top"``) or lowest (``"bottom"``) on each image
      (:func:`select_classes`).

    The reference's pure "CAT" experiments, without the cross-entropy, are not a mode
    here: CAT-KD always keeps the CE term with weight 1.

    Default beta. The authors advise tuning beta so that the CAT term they log (beta times
    the loss) lies between about 1 and 50 after the first epoch; their CIFAR-100 values
    (:data:`CAT_KD_PAIRS`, ``cat_pair=``) range from 0.7 to 15 without normalization and
    15 to 600 with it. The course's defaults on ``shapes`` (:data:`DEFAULT_BETA`,
    :data:`DEFAULT_NORMALIZED_BETA`) put the logged term in that range; they have not been
    re-chosen on the current ``shapes`` difficulty. Notebook 04's sweep (``sweep=``) compares
    betas on the validation split, which is where a choice is made.

    Args:
        student, teacher: the networks, each ending in global average pooling and a linear
            classifier over the same K classes.
        beta: weight of the CAT term (None: the ``cat_pair``'s, else :func:`default_beta`).
        cat_pair: a key of :data:`CAT_KD_PAIRS`: its beta, R and normalization become the
            defaults (explicit arguments still win).
        cam_resolution: R (None: the pair's, else 2).
        cam_normalize: normalize the pooled maps (None: the pair's, else ``cam_binarize``).
        cam_binarize: binarize the teacher's CAMs (the ``"cat_kd_bin"`` variant).
        cam_classes: transfer only this many classes per image (None: all K).
        cam_selection: ``"top"`` or ``"bottom"`` (used with ``cam_classes``).
        features, teacher_features: the feature layers (None: the ``"features"`` tap points).
        classifier, teacher_classifier: the linear classifiers (None: the ``"classifier"``
            tap points).
        init_head: initialise the student's CAM head as the reference does (He-normal over
            the fan-out, std sqrt(2 / K)); False keeps the weights of the student's own
            classifier (for a student that is not freshly built).

    Loss terms: ``"ce"`` (weight 1) and ``"cat"`` (weight beta, unweighted value logged).
    """

    name = "cat_kd"
    knobs: ClassVar[dict[str, Param]] = {
        "beta": Param(float, "weight of the CAT term (None: the cat_pair's or the default)",
                      min=0.0),
        "cat_pair": Param(
            str,
            "a reference configuration 'teacher/student' whose beta, R and normalization "
            "become the defaults",
            choices=tuple(CAT_KD_PAIRS),
        ),
        "cam_resolution": Param(int, "R, the size the CAMs are pooled to (None: 2)", min=1),
        "cam_normalize": Param(
            bool, "L2-normalize each pooled class map (None: only when binarized)"
        ),
        "cam_binarize": Param(bool, "binarize the teacher's CAMs at their mean |CAM|"),
        "cam_classes": Param(int, "transfer only this many classes per image", min=1),
        "cam_selection": Param(
            str, "with cam_classes, the teacher's top or bottom classes", choices=("top", "bottom")
        ),
    }  # fmt: skip

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        beta: float | None = None,
        cat_pair: str | None = None,
        cam_resolution: int | None = None,
        cam_normalize: bool | None = None,
        cam_binarize: bool = False,
        cam_classes: int | None = None,
        cam_selection: str = "top",
        features: str | None = None,
        teacher_features: str | None = None,
        classifier: str | None = None,
        teacher_classifier: str | None = None,
        init_head: bool = True,
    ):
        # Everything is checked before any model is converted or frozen, so a bad argument
        # leaves both as they were.
        pair = None
        if cat_pair is not None:
            if cat_pair not in CAT_KD_PAIRS:
                raise ValueError(
                    f"unknown cat_pair {cat_pair!r}: choose one of {', '.join(CAT_KD_PAIRS)}"
                )
            pair = CAT_KD_PAIRS[cat_pair]
        if beta is not None and beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if cam_selection not in _SELECTIONS:
            raise ValueError(
                f"cam_selection must be one of {', '.join(_SELECTIONS)}; got {cam_selection!r}"
            )
        resolution = cam_resolution
        if resolution is None:
            resolution = pair.resolution if pair is not None else 2
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"cam_resolution must be a positive integer, got {resolution!r}")
        s_feat = features_name(student, features)
        t_feat = features_name(teacher, teacher_features)
        s_clf = classifier_name(student, classifier)
        t_clf = classifier_name(teacher, teacher_classifier)
        Taps(student, [s_feat, s_clf]).remove()  # a misspelt name fails here, with suggestions
        Taps(teacher, [t_feat, t_clf]).remove()
        s_head, t_head = student.get_submodule(s_clf), teacher.get_submodule(t_clf)
        for role, head in (("student", s_head), ("teacher", t_head)):
            if not isinstance(head, (nn.Linear, CAMHead)):
                raise TypeError(
                    f"the {role}'s classifier is a {type(head).__name__}; CAT-KD needs an "
                    "nn.Linear on globally average-pooled features"
                )
        if s_head.out_features != t_head.out_features:
            raise ValueError(
                f"the student classifies {s_head.out_features} classes and the teacher "
                f"{t_head.out_features}: CAT-KD compares the maps class by class"
            )
        if cam_classes is not None and not 1 <= cam_classes <= s_head.out_features:
            raise ValueError(
                f"cam_classes must lie in [1, {s_head.out_features}], got {cam_classes}"
            )
        normalize = cam_normalize
        if normalize is None:
            normalize = pair.normalize if pair is not None else bool(cam_binarize)
        if beta is None:
            beta = pair.beta if pair is not None else default_beta(normalize)

        student = with_cam_head(student, classifier=s_clf)
        if init_head:
            # The reference builds its students with the 1x1-convolution head and initialises
            # it as every convolution there: He-normal over the fan-out (std sqrt(2 / K)).
            head = student.get_submodule(s_clf)
            torch.nn.init.kaiming_normal_(head.weight, mode="fan_out", nonlinearity="relu")
        teacher = with_cam_head(teacher, classifier=t_clf, copy=True)
        super().__init__(student, teacher)
        self.beta = float(beta)
        self.cat_pair = cat_pair
        self.cam_resolution = resolution
        self.cam_normalize = bool(normalize)
        self.cam_binarize = bool(cam_binarize)
        self.cam_classes = cam_classes
        self.cam_selection = cam_selection
        self.features, self.teacher_features = s_feat, t_feat
        self.classifier, self.teacher_classifier = s_clf, t_clf
        self.name = "cat_kd_bin" if self.cam_binarize else "cat_kd"

    def transferred_cams(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(student logits [B, K], student CAMs, teacher target CAMs) as the loss sees them.

        The CAMs are [B, K, H, W], or [B, n, H, W] with ``cam_classes = n``; the teacher's
        are binarized in the binarized variant. Pooling and normalization are left to
        :func:`cat_loss`.
        """
        logits, student_cams = forward_cams(
            self.student, images, features=self.features, classifier=self.classifier
        )
        names = [f"cat_cams/{self.teacher_features}", f"cat_logits/{self.teacher_classifier}"]

        def compute() -> dict[str, Tensor]:
            t_logits, t_cams = forward_cams(self.teacher, images, features=self.teacher_features,
                                            classifier=self.teacher_classifier)  # fmt: skip
            return {names[0]: t_cams, names[1]: t_logits}

        teacher = self.teacher_outputs(names, compute)
        teacher_cams, teacher_logits = teacher[names[0]], teacher[names[1]]
        if self.cam_binarize:
            teacher_cams = binarize_cams(teacher_cams)
        if self.cam_classes is not None:
            index = select_classes(teacher_logits, self.cam_classes, self.cam_selection)
            student_cams = _gather_classes(student_cams, index)
            teacher_cams = _gather_classes(teacher_cams, index)
        return logits, student_cams, teacher_cams

    def forward(self, images: Tensor, labels: Tensor) -> DistillOutput:
        """images [B, 3, H, W], labels [B] -> student logits [B, K] and {"ce", "cat"}."""
        logits, student_cams, teacher_cams = self.transferred_cams(images)
        terms = {
            "ce": F.cross_entropy(logits, labels),
            "cat": cat_loss(student_cams, teacher_cams, self.cam_resolution, self.cam_normalize),
        }
        return DistillOutput(logits, terms, {"ce": 1.0, "cat": self.beta})

    def hparams(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "cat_pair": self.cat_pair,
            "cam_resolution": self.cam_resolution,
            "cam_normalize": self.cam_normalize,
            "cam_binarize": self.cam_binarize,
            "cam_classes": self.cam_classes,
            "cam_selection": self.cam_selection,
            "features": self.features,
            "teacher_features": self.teacher_features,
        }
