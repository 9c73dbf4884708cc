"""The CAM head: a classifier that is a bias-free 1x1 convolution (CAT-KD's network).

Zhou et al. (CVPR 2016) read class activation maps off a network that ends in global
average pooling and a linear classifier; CAT-KD (Guo et al., CVPR 2023) turns that classifier
into a bias-free 1x1 convolution for teacher and student alike, so that a network *computes*
its CAMs and its logits are their averages. :class:`CAMHead` is that classifier and
:func:`with_cam_head` converts a model's ``nn.Linear`` into it. The maps themselves, and the
losses built on them, are in :mod:`atcourse.distill.cam` and :mod:`atcourse.distill.cat_kd`.
"""

from __future__ import annotations

import copy as _copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .taps import Taps, tap_points

__all__ = ["CAMHead", "with_cam_head", "classifier_name", "features_name", "submodule"]


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


def classifier_name(model: nn.Module, classifier: str | None = None) -> str:
    """The classifier's dotted name: ``classifier``, else the model's ``"classifier"`` tap."""
    return classifier if classifier is not None else tap_points(model, "classifier")[0]


def features_name(model: nn.Module, features: str | None = None) -> str:
    """The layer whose output is pooled and classified (default: the ``"features"`` tap)."""
    return features if features is not None else tap_points(model, "features")[0]


def submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``; a misspelt name fails naming the closest valid ones."""
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
    ``fc.weight`` into the 1x1 kernel and discarding ``fc.bias``. Conversion copies; a
    freshly built student's head is then initialised as the reference's by
    :class:`~atcourse.distill.CATKD` (He-normal over the fan-out), the rest of its weights
    identical to the other methods' students.

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
    name = classifier_name(model, classifier)
    module = submodule(model, name)
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
