"""Tests for class activation maps (atcourse.distill.cam)."""

from __future__ import annotations

import pytest
import torch

from atcourse.distill import binarize_cams, class_activation_maps
from atcourse.models import Taps, build, tap_points


def test_cam_by_hand() -> None:
    # one image, two channels on a 1x2 grid, two classes
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # [1, 2, 1, 2]
    weight = torch.tensor([[1.0, 0.0], [2.0, -1.0]])  # [K=2, C=2]
    cams = class_activation_maps(features, weight)
    assert cams.shape == (1, 2, 1, 2)
    assert cams[0, 0].tolist() == [[1.0, 2.0]]  # class 0 reads channel 0
    assert cams[0, 1].tolist() == [[-1.0, 5.0]]  # 2 * A0 - A1
    conv_weight = weight[:, :, None, None]  # a 1x1 convolution's [K, C, 1, 1]
    assert torch.equal(class_activation_maps(features, conv_weight), cams)


@pytest.mark.parametrize("arch", ["wrn_16_1", "resnet20"])
def test_pooled_cams_plus_bias_are_the_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = build(arch).eval()
    (feat,) = tap_points(model, "features")
    fc = model.get_submodule(tap_points(model, "classifier")[0])
    with torch.no_grad(), Taps(model, [feat]) as taps:
        logits = model(torch.randn(3, 3, 32, 32))
    cams = class_activation_maps(taps[feat], fc.weight)
    assert torch.allclose(cams.mean(dim=(2, 3)) + fc.bias, logits, atol=1e-5)


def test_shape_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="features"):
        class_activation_maps(torch.zeros(1, 4, 2, 2), torch.zeros(10, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        class_activation_maps(torch.zeros(4, 2, 2), torch.zeros(10, 4))


def test_binarize_keeps_positions_above_the_mean_absolute_value() -> None:
    cams = torch.tensor([[[[4.0, 0.0], [-4.0, 1.0]]]], requires_grad=True)  # mean |.| = 2.25
    out = binarize_cams(cams)
    assert out.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
    assert not out.requires_grad
