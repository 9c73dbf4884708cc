"""Post-activation CIFAR ResNets (resnet20/32/56/110, resnet8x4, resnet32x4).

The layout is the one used by the CIFAR-100 distillation benchmarks (Tian et al.,
"Contrastive Representation Distillation", ICLR 2020, RepDistiller; reused by CAT-KD, Guo et
al., CVPR 2023), itself derived from He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016, Sec. 4.2:

- stem: conv3x3 -> BN -> ReLU;
- ``layer1``, ``layer2``, ``layer3``: ``n = (depth - 2) / 6`` basic blocks each, strides 1, 2, 2;
- global average pool -> ``fc``.

Each block applies an ``nn.Identity`` named ``preact`` to the residual sum before its final
ReLU, so a forward hook on ``layer3.<last>.preact`` reads the pre-activation features that
several distillation losses use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CifarResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ``preact`` (identity) and ``relu``.

    Input ``(B, C_in, H, W)``, output ``(B, C_out, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.preact = nn.Identity()
        # Not in-place: ``preact`` returns the very tensor ReLU would overwrite, and a hook
        # on it must keep the pre-activation values.
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.preact(out + shortcut))


class CifarResNet(nn.Module):
    """ResNet-depth with basic blocks for CIFAR-sized images.

    Args:
        depth: ``6n + 2`` (8, 20, 32, 56, 110, ...).
        filters: four widths ``[stem, layer1, layer2, layer3]``; ``[16, 16, 32, 64]`` for the
            classic CIFAR ResNets, ``[32, 64, 128, 256]`` for the "x4" variants.
        num_classes: output classes.

    Input ``(B, 3, H, W)``, output logits ``(B, num_classes)``. Feature maps: ``layer1``
    ``(B, filters[1], H, W)``, ``layer2`` ``(B, filters[2], H/2, W/2)``, ``layer3``
    ``(B, filters[3], H/4, W/4)``.
    """

    def __init__(
        self, *, depth: int, filters: Sequence[int] = (16, 16, 32, 64), num_classes: int = 10
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth}"
            )
        if len(filters) != 4:
            raise ValueError(f"filters must hold 4 widths [stem, l1, l2, l3], got {list(filters)}")
        n = (depth - 2) // 6
        self.depth = depth
        self.filters = list(filters)

        self.conv1 = nn.Conv2d(3, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(filters[0], filters[1], n, stride=1)
        self.layer2 = self._make_layer(filters[1], filters[2], n, stride=2)
        self.layer3 = self._make_layer(filters[2], filters[3], n, stride=2)
        self.fc = nn.Linear(filters[3], num_classes)
        self.num_features = filters[3]
        suffixes = {(16, 16, 32, 64): "", (32, 64, 128, 256): "x4"}
        self.arch = f"resnet{depth}{suffixes.get(tuple(self.filters), '_custom')}"
        # Layer names per role, read by ``atcourse.models.tap_points``.
        self.tap_points: dict[str, list[str]] = {
            "groups": ["layer1", "layer2", "layer3"],
            "preact": [f"layer3.{n - 1}.preact"],
            "features": ["layer3"],
            "classifier": ["fc"],
        }
        self._init_weights()

    @staticmethod
    def _make_layer(in_channels: int, out_channels: int, n: int, *, stride: int) -> nn.Sequential:
        blocks = [
            BasicBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                stride=stride if i == 0 else 1,
            )
            for i in range(n)
        ]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images -> ``(B, num_classes)`` logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        # Global mean (the benchmarks use an 8x8 pool, identical at 32x32 input).
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, filters[3])
        return self.fc(x)
