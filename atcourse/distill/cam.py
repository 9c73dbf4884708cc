"""Class activation maps (CAM): where a network's evidence for each class lies.

Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
Localization", CVPR 2016. For a network that ends in global average pooling and a linear
classifier, with A the last feature map [C, H, W] and W the classifier's weights [K, C],

    CAM_k(x, y) = sum_c W[k, c] * A_c(x, y)                       (Zhou et al., Eq. 1-2)

and, because pooling and the classifier are both linear, the average of CAM_k over the
positions is the logit of class k without its bias:

    z_k = mean_{x,y} CAM_k(x, y) + b_k.

CAT-KD (:mod:`atcourse.distill.cat_kd`) and AFD (:mod:`atcourse.distill.aft`) build on
these maps; the bias-free CAM head lives with the models (:mod:`atcourse.models.cam_head`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import mask_alignment
from ..models import Taps
from ..models.cam_head import CAMHead, classifier_name, features_name, submodule
from ..runtime import eval_mode

__all__ = [
    "class_activation_maps",
    "binarize_cams",
    "forward_cams",
    "check_cam_identity",
    "cam_alignment",
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
    feat_name = features_name(model, features)
    head = submodule(model, classifier_name(model, classifier))
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
    head = model.get_submodule(classifier_name(model, classifier))
    bias = head.bias if isinstance(head, nn.Linear) and head.bias is not None else None
    pooled = cams.float().mean(dim=(2, 3))  # [B, K]
    if bias is not None:
        pooled = pooled + bias.float()
    gap = (pooled - logits.float()).abs().max().item()
    tolerance = rtol * max(1.0, logits.float().abs().max().item())
    if gap > tolerance:
        raise ValueError(
            f"average-pooled CAMs differ from the logits by up to {gap:.3g} (tolerance "
            f"{tolerance:.3g}): the feature layer {features_name(model, features)!r} is not "
            "what the classifier sees after global average pooling; pass features=<the "
            "layer whose output is pooled and classified>"
        )
    return gap


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
    return mask_alignment(F.relu(maps), masks.to(maps.device))
