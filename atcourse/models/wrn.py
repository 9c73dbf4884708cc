"""Pre-activation wide residual networks (WRN-d-k) for 32x32 inputs.

The architecture follows the functional ``resnet`` of the attention-transfer reference code
(Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017; widths and depth
rule from Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016):

- ``conv0``: 3x3 conv, 3 -> 16 channels;
- ``group0``, ``group1``, ``group2``: ``n = (depth - 4) / 6`` pre-activation blocks each, with
  widths ``16k, 32k, 64k`` and strides ``1, 2, 2``;
- ``bn`` -> ``relu`` -> global average pool -> ``fc``.

Each group returns the residual stream *before* any normalisation, which is the tensor that
activation-based attention transfer turns into spatial attention maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WideResNet", "PreActBlock"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut.

    Input ``(B, C_in, H, W)``, output ``(B, C_out, H / stride, W / stride)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # The reference only projects the shortcut when the width changes; a stride-2 block
        # with equal widths never occurs in a WRN, so that case is not special-cased.
        self.convdim: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.convdim = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o1 = F.relu(self.bn0(x))
        y = self.conv0(o1)
        o2 = F.relu(self.bn1(y))
        z = self.conv1(self.dropout(o2))
        # As in the reference, the projection reads the pre-activated input o1, not x.
        shortcut = x if self.convdim is None else self.convdim(o1)
        return z + shortcut


class WideResNet(nn.Module):
    """WRN-depth-width for CIFAR-sized images.

    Args:
        depth: total depth, ``6n + 4`` (16, 22, 28, 40, ...).
        width: widening factor ``k``.
        num_classes: output classes.
        dropout: dropout probability between the two convs of each block (0 disables it).

    Input ``(B, 3, H, W)`` (32x32 for CIFAR), output logits ``(B, num_classes)``. Feature maps:
    ``group0`` ``(B, 16k, H, W)``, ``group1`` ``(B, 32k, H/2, W/2)``, ``group2``, ``bn`` and
    ``relu`` ``(B, 64k, H/4, W/4)``.
    """

    def __init__(
        self, *, depth: int, width: int, num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}"
            )
        if width < 1:
            raise ValueError(f"WRN width must be a positive integer, got {width}")
        n = (depth - 4) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.depth = depth
        self.width = width

        self.conv0 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.group0 = self._make_group(16, widths[0], n, stride=1, dropout=dropout)
        self.group1 = self._make_group(widths[0], widths[1], n, stride=2, dropout=dropout)
        self.group2 = self._make_group(widths[1], widths[2], n, stride=2, dropout=dropout)
        self.bn = nn.BatchNorm2d(widths[2])
        # Not in-place: a hook on ``bn`` must keep the pre-ReLU map it captured.
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[2], num_classes)
        self.num_features = widths[2]
        self.arch = f"wrn_{depth}_{width}"
        # Layer names per role, read by ``atcourse.models.tap_points``.
        self.tap_points: dict[str, list[str]] = {
            "groups": ["group0", "group1", "group2"],
            "preact": ["bn"],
            "features": ["relu"],
            "classifier": ["fc"],
        }
        self._init_weights()

    @staticmethod
    def _make_group(
        in_channels: int, out_channels: int, n: int, *, stride: int, dropout: float
    ) -> nn.Sequential:
        blocks = [
            PreActBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                stride=stride if i == 0 else 1,
                dropout=dropout,
            )
            for i in range(n)
        ]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        """The reference's initialisation (attention-transfer ``utils.py``): He-normal
        (fan-in) convolutions and classifier, batch-norm scales drawn from U(0, 1), zero
        biases and shifts."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images -> ``(B, num_classes)`` logits."""
        x = self.conv0(x)
        x = self.group0(x)
        x = self.group1(x)
        x = self.group2(x)
        x = self.relu(self.bn(x))
        # Global mean rather than a fixed 8x8 pool, so other input sizes also work.
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 64k)
        return self.fc(x)
