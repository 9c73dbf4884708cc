"""Class activation maps (CAM): where a network finds the evidence for each class.

Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
Localization", CVPR 2016. For a network that ends in global average pooling and a linear
classifier, with A the last feature map [C, H, W] and W the classifier's weights [K, C],

    CAM_k(x, y) = sum_c W[k, c] * A_c(x, y)                       (Zhou et al., Eq. 1-2)

and, because pooling and the classifier are both linear, the average of CAM_k over the
positions is the logit of class k without its bias:

    z_k = mean_{x,y} CAM_k(x, y) + b_k.

CAT-KD (Guo et al., CVPR 2023) transfers these maps from teacher to student.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["class_activation_maps", "binarize_cams"]


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
