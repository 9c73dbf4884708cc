"""Class activation maps (CAM) and class attention transfer (CAT-KD).

Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
Localization", CVPR 2016. For a network that ends in global average pooling and a linear
classifier, with A the last feature map [C, H, W] and W the classifier's weights [K, C],

    CAM_k(x, y) = sum_c W[k, c] * A_c(x, y)                       (Zhou et al., Eq. 1-2)

and, because pooling and the classifier are both linear, the average of CAM_k over the
positions is the logit of class k without its bias:

    z_k = mean_{x,y} CAM_k(x, y) + b_k.

CAT-KD (Guo, Yan, Li, Lin, "Class Attention Transfer Based Knowledge Distillation",
CVPR 2023) transfers these maps from teacher to student. Teacher and
student both get a classifier that is a bias-free 1x1 convolution (:class:`CAMHead`,
:func:`with_cam_head`), so that a network *computes* its CAMs and its logits are their
averages; the student is trained with

    L = CE(z_S, y) + beta * CAT,   CAT = MSE(pool_R(CAM_S), pool_R(CAM_T))

(:func:`cat_loss`, :class:`CATKD`), with no logit-KD term. Where the paper is terse, this
module follows the authors' public code (GzyAftermath/CAT-KD, built on mdistiller); each
function says which of its choices it follows and where it departs.
"""

from __future__ import annotations

import copy as _copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import mask_alignment
from ..models import Taps, tap_points
from ..runtime import eval_mode
from . import METHODS, register
from .base import Distiller, DistillOutput

__all__ = [
    "class_activation_maps",
    "binarize_cams",
    "CAMHead",
    "with_cam_head",
    "forward_cams",
    "check_cam_identity",
    "cat_loss",
    "select_classes",
    "cam_alignment",
    "CATKD",
    "CAT_KD_PAIRS",
    "DEFAULT_BETA",
    "DEFAULT_NORMALIZED_BETA",
    "CATPair",
]


def class_activation_maps(features: Tensor, classifier_weight: Tensor) -> Tensor:
    """Class activation maps of a feature tensor under a linear classifier (Eq. 2).

    Args:
        features: the last feature map A, [B, C, H, W] (after the final ReLU: what the
            pooling layer sees).
        classifier_weight: the classifier's weights W, [K, C] (``fc.weight``; a 1x1
            convolution's [K, C, 1, 1] weight is accepted too).

    Returns:
        [B, K, H, W], ``CAM[b, k] = sum_c W[k, c] * A[b, c]``, in the features' dtype.
        ``cams.mean(dim=(2, 3))`` equals the logits without the classifier's bias.
    """
    if classifier_weight.dim() == 4 and classifier_weight.shape[-2:] == (1, 1):
        classifier_weight = classifier_weight.flatten(1)  # 1x1 conv [K, C, 1, 1] -> [K, C]
    if features.dim() != 4 or classifier_weight.dim() != 2:
        raise ValueError(
            "expected features [B, C, H, W] and classifier weights [K, C], got "
            f"{tuple(features.shape)} and {tuple(classifier_weight.shape)}"
        )
    if features.shape[1] != classifier_weight.shape[1]:
        raise ValueError(
            f"the features have {features.shape[1]} channels but the classifier expects "
            f"{classifier_weight.shape[1]}: pass the feature map that feeds the classifier "
            "(the model's 'features' tap point)"
        )
    weight = classifier_weight.to(features.dtype)
    return (weight @ features.flatten(2)).unflatten(2, features.shape[-2:])  # [B, K, H, W]


def binarize_cams(cams: Tensor) -> Tensor:
    """Binarized CAMs: 1 where a map exceeds its mean absolute value, else 0.

    The threshold is per map (per image and class): ``mean_{x,y} |CAM_k(x, y)|``, the
    binarized variant CAT-KD explores. The step has no useful gradient; the result is a
    constant mask (the function detaches).

    Args:
        cams: [B, K, H, W] (or any [..., H, W]).

    Returns:
        A float tensor of zeros and ones, the shape of ``cams``.
    """
    if cams.dim() < 2:
        raise ValueError(f"expected maps [..., H, W], got shape {tuple(cams.shape)}")
    cams = cams.detach()
    threshold = cams.abs().mean(dim=(-2, -1), keepdim=True)
    return (cams > threshold).to(cams.dtype)


# --------------------------------------------------------------------------- the CAM head


class CAMHead(nn.Module):
    """A classifier that is a bias-free 1x1 convolution: CAT-KD's CAM head.

    ``weight`` is a 1x1 convolution's kernel, [K, C, 1, 1]. On a feature map [B, C, H, W]
    the head returns the class activation maps [B, K, H, W]; on pooled features [B, C] it
    returns logits [B, K]. The two agree: the convolution and the average pooling are
    both linear, so classifying the averaged features gives the average of the CAMs,
    ``head(A.mean((2, 3))) == head(A).mean((2, 3))``. A model whose classifier is replaced
    by this head (:func:`with_cam_head`) therefore keeps its forward (pool, then classify)
    and computes exactly what the reference implementation's converted models compute
    (1x1 convolution, then pooling), at the cost of one small matrix product instead of
    H*W of them; its CAMs are read with :func:`forward_cams`.

    There is no bias: a bias is one number per class and cannot be spread over the
    positions of a map, so only without it are the logits exactly the CAMs' averages.

    Args:
        in_channels: C, the channels of the feature map that feeds the classifier.
        num_classes: K.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels, 1, 1))
        # nn.Linear's default initialisation, so a converted fresh model starts as it would
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> CAMHead:
        """A head holding a copy of ``linear``'s weights [K, C]; its bias is dropped.

        The copy keeps the weights' device, dtype and ``requires_grad`` (a frozen teacher's
        head stays frozen). Dropping the bias is what the reference code does when it
        converts a pretrained teacher (its ``fc.weight`` becomes the 1x1 kernel).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear classifier, got {type(linear).__name__}")
        head = cls(linear.in_features, linear.out_features)
        head.weight = nn.Parameter(
            linear.weight.detach().clone().view(linear.out_features, linear.in_features, 1, 1),
            requires_grad=linear.weight.requires_grad,
        )
        return head

    @property
    def in_features(self) -> int:
        """C (the name ``nn.Linear`` uses, for code that reads ``model.fc.in_features``)."""
        return self.in_channels

    @property
    def out_features(self) -> int:
        """K (the name ``nn.Linear`` uses)."""
        return self.num_classes

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] features -> [B, K, H, W] CAMs; [B, C] pooled features -> [B, K] logits."""
        if x.dim() not in (2, 4) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"CAMHead({self.in_channels} -> {self.num_classes}) expects features "
                f"[B, {self.in_channels}, H, W] or pooled features [B, {self.in_channels}], "
                f"got {tuple(x.shape)}"
            )
        if x.dim() == 4:
            return F.conv2d(x, self.weight)
        return F.linear(x, self.weight.flatten(1))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.num_classes}, kernel_size=1, bias=False"


def _classifier_name(model: nn.Module, classifier: str | None) -> str:
    return classifier if classifier is not None else tap_points(model, "classifier")[0]


def _features_name(model: nn.Module, features: str | None) -> str:
    return features if features is not None else tap_points(model, "features")[0]


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        pass
    Taps(model, [name]).remove()  # raises TapNameError, naming the closest valid names
    return model.get_submodule(name)


def with_cam_head(
    model: nn.Module, *, classifier: str | None = None, copy: bool = False
) -> nn.Module:
    """Turn a model's linear classifier into a bias-free 1x1-convolution CAM head.

    After the conversion the model computes ``logits = mean_{x,y} CAM(x, y)`` (no bias),
    and :func:`forward_cams` returns its CAMs along with its logits. This is CAT-KD's
    network for teacher and student alike. The reference implementation builds the
    student with this head from the start and converts the pretrained teacher by copying
    ``fc.weight`` into the 1x1 kernel and discarding ``fc.bias``; converting a freshly
    built student here does the same, and keeps its initial weights identical to those
    of the other methods' students (only the bias, which starts at zero in a WRN, goes).

    Args:
        model: a network ending in global average pooling and an ``nn.Linear``.
        classifier: the classifier's dotted name (None: the model's ``"classifier"`` tap
            point, ``"fc"`` for the built-in CNNs).
        copy: convert a deep copy and leave ``model`` untouched (for a teacher shared by
            several methods); otherwise the model is converted in place and returned.

    Returns:
        The converted model (the same object unless ``copy``). A model whose classifier
        already is a :class:`CAMHead` is returned as it is (or copied).
    """
    name = _classifier_name(model, classifier)
    module = _submodule(model, name)
    if not isinstance(module, (nn.Linear, CAMHead)):
        raise TypeError(
            f"the classifier {name!r} of {type(model).__name__} is a {type(module).__name__}, "
            "not an nn.Linear: CAMs need a linear classifier on globally average-pooled "
            "features; pass classifier=<the name of that nn.Linear>"
        )
    if copy:
        model = _copy.deepcopy(model)
        module = model.get_submodule(name)
    if isinstance(module, CAMHead):
        return model
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, CAMHead.from_linear(module))
    return model


def forward_cams(
    model: nn.Module,
    images: Tensor,
    *,
    features: str | None = None,
    classifier: str | None = None,
) -> tuple[Tensor, Tensor]:
    """One forward of ``model``: its logits [B, K] and its CAMs [B, K, H, W].

    The CAMs are the classifier applied at every position of the feature map that feeds
    it (:func:`class_activation_maps`; for a converted model, its :class:`CAMHead`). Works
    for plain models too: then ``cams.mean((2, 3)) + bias == logits``. Runs in the model's
    current mode and autograd state (the caller decides ``no_grad`` and ``eval``).

    Args:
        model: the network; images: its input, [B, 3, H, W].
        features: the feature layer's name (None: the ``"features"`` tap point, the output
            of the last ReLU for a WRN, of ``layer3`` for a CIFAR ResNet).
        classifier: the classifier's name (None: the ``"classifier"`` tap point).
    """
    feat_name = _features_name(model, features)
    head = _submodule(model, _classifier_name(model, classifier))
    with Taps(model, [feat_name]) as taps:
        logits = model(images)
    feats = taps[feat_name]
    if isinstance(head, CAMHead):
        cams = head(feats)
    elif isinstance(head, nn.Linear):
        cams = class_activation_maps(feats, head.weight)
    else:
        raise TypeError(
            f"the classifier of {type(model).__name__} is a {type(head).__name__}; CAMs need "
            "an nn.Linear or a CAMHead (pass classifier=<its name>)"
        )
    return logits, cams


@torch.no_grad()
def check_cam_identity(
    model: nn.Module,
    images: Tensor,
    *,
    features: str | None = None,
    classifier: str | None = None,
    rtol: float = 1e-4,
) -> float:
    """Check that the average-pooled CAMs give the logits: ``mean_{x,y} CAM + b == z``.

    One eval-mode forward (the model's mode is restored). ``b`` is the classifier's bias
    for an ``nn.Linear`` and 0 for a :class:`CAMHead`.

    Returns:
        The largest absolute difference between the pooled CAMs (plus bias) and the logits.

    Raises:
        ValueError: when the difference exceeds ``rtol`` times the largest logit (at least
            ``rtol``): the tapped feature layer is then not what the classifier sees after
            the pooling (a normalization or activation comes after it, or the pooling is
            not a global average), and the CAMs would not explain the logits.
    """
    with eval_mode(model):
        logits, cams = forward_cams(model, images, features=features, classifier=classifier)
    head = model.get_submodule(_classifier_name(model, classifier))
    bias = head.bias if isinstance(head, nn.Linear) and head.bias is not None else None
    pooled = cams.float().mean(dim=(2, 3))  # [B, K]
    if bias is not None:
        pooled = pooled + bias.float()
    gap = (pooled - logits.float()).abs().max().item()
    tolerance = rtol * max(1.0, logits.float().abs().max().item())
    if gap > tolerance:
        raise ValueError(
            f"average-pooled CAMs differ from the logits by up to {gap:.3g} (tolerance "
            f"{tolerance:.3g}): the feature layer {_features_name(model, features)!r} is not "
            "what the classifier sees after global average pooling; pass features=<the "
            "layer whose output is pooled and classified>"
        )
    return gap


# --------------------------------------------------------------------------- the CAT loss


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
        A scalar, float32 (reduced-precision CAMs are upcast before pooling).
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
    student = F.adaptive_avg_pool2d(student_cams.float(), pool)  # [B, K, R, R]
    teacher = F.adaptive_avg_pool2d(teacher_cams.detach().float(), pool)
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


@torch.no_grad()
def cam_alignment(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    *,
    features: str | None = None,
    classifier: str | None = None,
) -> Tensor:
    """Share of the positive CAM mass of each image's class that lies on the object: [B].

    ``mask_alignment(ReLU(CAM_y))`` for class y = ``labels`` (the true class, or any
    class per image), from one eval-mode forward under ``no_grad`` (the mode is restored).
    Negative evidence is left out, as CAM figures do; an image whose map has no positive
    value scores 0. The chance level is the object's area (``metrics.uniform_alignment``).

    Args:
        model: a network (plain or converted); images [B, 3, H, W]; masks [B, H, W] bool;
            labels [B] class indices.
    """
    with eval_mode(model):
        _, cams = forward_cams(model, images, features=features, classifier=classifier)
    index = labels.to(cams.device).long()
    maps = cams[torch.arange(cams.shape[0], device=cams.device), index]  # [B, H, W]
    return mask_alignment(F.relu(maps.float()), masks.to(maps.device))


# --------------------------------------------------------------------------- CAT-KD


_SELECTIONS = ("top", "bottom")

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
      the reference's binarization configuration), and the method is named
      ``"cat_kd_bin"`` in run records and tables;
    - ``cam_classes`` / ``cam_selection``: transfer only the maps of the n classes the
      teacher scores highest (``"top"``) or lowest (``"bottom"``) on each image
      (:func:`select_classes`).

    The reference's pure "CAT" experiments, without the cross-entropy, are not a mode
    here: CAT-KD always keeps the CE term with weight 1.

    Default beta. The authors advise tuning beta so that the CAT term they log (beta times
    the loss) lies between about 1 and 50 after the first epoch; their CIFAR-100 values
    (:data:`CAT_KD_PAIRS`, ``cat_pair=``) range from 0.7 to 15 without normalization and
    15 to 600 with it. The defaults were set that way on ``shapes``: teacher wrn_16_2 from
    the lab zoo (91.9% test accuracy), student wrn_16_1, lab profile, seed 0, R = 2.
    Without normalization the CAT term averaged over the first epoch was 41.6, 41.1 and
    41.4 at beta = 0.1, 1 and 10: about the teacher's own pooled-CAM energy (mean square
    about 43 on a batch), because the student's maps start near zero while the teacher's
    2x2 cells reach +-40 in the quadrant that holds the small object. The advised range
    thus asks for beta between about 0.025 and 1.2. At beta = 1 and 10 the cross-entropy
    stayed at or above ln 10 for four epochs (the CAT gradient drowned the labels' and the
    student did not learn); at beta = 0.1 (beta x CAT = 4.2) it learned faster than the
    student alone (training accuracy after four epochs 33% against 20%). After the full
    12 epochs: beta = 0.1 reached 86.0% test accuracy, beta = 0.3 (beta x CAT = 12.3)
    83.6%, the student alone 48.4%: default 0.1. With normalization (the binarized
    variant) the first-epoch term was 0.16 at beta = 10 (beta x CAT = 1.6); that student
    reached 83.4%: default 10. One seed each.

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

    Loss terms: ``"ce"`` (weight 1) and ``"cat"`` (weight beta, unweighted value logged).
    """

    name = "cat_kd"

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
        s_feat = _features_name(student, features)
        t_feat = _features_name(teacher, teacher_features)
        s_clf = _classifier_name(student, classifier)
        t_clf = _classifier_name(teacher, teacher_classifier)
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
        with torch.no_grad():
            teacher_logits, teacher_cams = forward_cams(
                self.teacher,
                images,
                features=self.teacher_features,
                classifier=self.teacher_classifier,
            )
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


def _build_binarized(student: nn.Module, teacher: nn.Module | None = None, **hparams: Any) -> CATKD:
    """``build_method("cat_kd_bin", ...)``: CAT-KD with the teacher's CAMs binarized."""
    if teacher is None:
        raise ValueError("method 'cat_kd_bin' needs a teacher; pass teacher=...")
    if hparams.get("cam_binarize") is False:
        raise ValueError("'cat_kd_bin' always binarizes; use method 'cat_kd' for the plain maps")
    return CATKD(student, teacher, **{**hparams, "cam_binarize": True})


# The binarized variant is a row of its own in tables (its runs are named "cat_kd_bin"), so
# it is buildable by that name too; its keyword arguments are CATKD's.
_build_binarized.needs_teacher = True  # type: ignore[attr-defined]
_build_binarized.cls = CATKD  # type: ignore[attr-defined]
METHODS["cat_kd_bin"] = _build_binarized
