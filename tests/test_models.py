"""Tests for the model zoo, the layer taps and the ViT attention paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atcourse.models import (
    CifarResNet,
    TapNameError,
    Taps,
    VisionTransformer,
    WideResNet,
    available,
    build,
    count_parameters,
    forward_with_taps,
    tap_points,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32)


# Published sizes. WRNs: Zagoruyko & Komodakis 2017 (attention transfer), CIFAR-10 heads.
# CIFAR ResNets: resnet8x4 / resnet32x4 / resnet56 / resnet110 as tabulated by the CIFAR-100
# distillation benchmarks (RepDistiller, CAT-KD), i.e. with 100-way heads (resnet8x4 has
# 1.21M with a 10-way head, which is 1.6% off); resnet20's 0.27M is He et al. 2016,
# Table 6, for CIFAR-10 (with 100 classes it has 0.28M).
PUBLISHED = [
    ("wrn_16_1", 10, 0.175e6),
    ("wrn_16_2", 10, 0.69e6),
    ("wrn_40_1", 10, 0.56e6),
    ("wrn_40_2", 10, 2.24e6),
    ("resnet8x4", 100, 1.23e6),
    ("resnet32x4", 100, 7.43e6),
    ("resnet20", 10, 0.27e6),
    ("resnet56", 100, 0.86e6),
    ("resnet110", 100, 1.73e6),
]


@pytest.mark.parametrize(("name", "num_classes", "published"), PUBLISHED)
def test_parameter_counts_match_published(name: str, num_classes: int, published: float) -> None:
    n = count_parameters(build(name, num_classes=num_classes))
    assert abs(n - published) / published < 0.01, f"{name}: {n} vs {published:.0f}"


def test_count_parameters_ignores_frozen() -> None:
    model = build("wrn_16_1")
    total = count_parameters(model)
    model.fc.requires_grad_(False)
    assert count_parameters(model) == total - model.fc.weight.numel() - model.fc.bias.numel()


@pytest.mark.parametrize("name", available())
def test_every_model_builds_and_classifies(name: str) -> None:
    model = build(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(_images())
    assert out.shape == (2, 7)
    assert model.arch == name
    assert isinstance(model.tap_points, dict)
    for role in ("groups", "features", "classifier"):
        for layer in tap_points(model, role):
            model.get_submodule(layer)  # every declared name resolves


def test_generic_wrn_name_parses() -> None:
    model = build("wrn_22_3")
    assert isinstance(model, WideResNet)
    assert (model.depth, model.width) == (22, 3)
    assert model.arch == "wrn_22_3"
    with pytest.raises(ValueError, match="6n"):
        build("wrn_17_2")


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        build("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in ("wrn_16_2", "resnet8x4", "vit_tiny"):
        assert name in message
    assert "wrn_<depth>_<width>" in message


def test_registry_types() -> None:
    assert isinstance(build("resnet20"), CifarResNet)
    assert isinstance(build("vit_small"), VisionTransformer)


def test_wrn_group_tap_shapes() -> None:
    model = build("wrn_16_2").eval()
    names = tap_points(model, "groups")
    assert names == ["group0", "group1", "group2"]
    with torch.no_grad(), Taps(model, names) as taps:
        model(_images())
    assert [tuple(taps[n].shape) for n in names] == [
        (2, 32, 32, 32),
        (2, 64, 16, 16),
        (2, 128, 8, 8),
    ]
    assert not taps.active


def test_wrn_preact_is_before_relu() -> None:
    model = build("wrn_16_1").eval()
    names = tap_points(model, "preact") + tap_points(model, "features")
    with torch.no_grad():
        _, out = forward_with_taps(model, _images(), names)
    pre, post = out["bn"], out["relu"]
    assert (pre < 0).any()
    assert torch.equal(post, pre.clamp_min(0))


def test_resnet8x4_feature_and_preact_taps() -> None:
    model = build("resnet8x4").eval()
    assert tap_points(model, "preact") == ["layer3.0.preact"]
    names = tap_points(model, "features") + tap_points(model, "preact")
    with torch.no_grad():
        _, out = forward_with_taps(model, _images(), names)
    assert out["layer3"].shape == (2, 256, 8, 8)
    # The identity tap holds the residual sum itself, untouched by the following ReLU.
    assert (out["layer3.0.preact"] < 0).any()
    assert torch.equal(out["layer3"], out["layer3.0.preact"].clamp_min(0))


def test_resnet56_preact_name_points_at_last_block() -> None:
    assert tap_points(build("resnet56"), "preact") == ["layer3.8.preact"]


@pytest.mark.parametrize("name", ["wrn_16_2", "resnet8x4", "resnet20"])
def test_cam_identity(name: str) -> None:
    """Pooling commutes with the linear head: mean_hw(W @ F) + b equals the logits."""
    model = build(name).eval()
    (feat_name,) = tap_points(model, "features")
    (fc_name,) = tap_points(model, "classifier")
    fc = model.get_submodule(fc_name)
    with torch.no_grad():
        logits, out = forward_with_taps(model, _images(), [feat_name])
        cams = torch.einsum("kc,bchw->bkhw", fc.weight, out[feat_name])  # (B, K, H, W)
        recon = cams.mean(dim=(2, 3)) + fc.bias
    torch.testing.assert_close(recon, logits, rtol=1e-4, atol=1e-5)


def test_taps_on_user_sequential() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
        nn.Flatten(),
    )
    taps = Taps(model, ["0", "2.0"])
    out = model(_images())
    assert taps["0"].shape == (2, 4, 32, 32)
    assert taps["2.0"].shape == (2, 6, 16, 16)
    assert "0" in taps and "1" not in taps
    assert list(taps.keys()) == ["0", "2.0"]
    assert len(list(taps.values())) == 2
    assert taps["2.0"].requires_grad  # not detached by default, so losses can train on it
    assert out.shape == (2, 6 * 16 * 16)
    taps.clear()
    assert "0" not in taps
    taps.remove()
    model(_images())
    assert len(taps) == 0
    assert all(not m._forward_hooks for m in model.modules())


def test_taps_detach_and_single_name() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    with Taps(model, "0", detach=True) as taps:
        model(torch.randn(5, 4))
    assert not taps["0"].requires_grad


def test_taps_store_first_element_of_tuples() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1, x - 1

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair(x)[0]

    x = torch.zeros(2, 3)
    _, out = forward_with_taps(Net(), x, ["pair"])
    assert torch.equal(out["pair"], x + 1)


def test_unknown_tap_name_suggests_close_match() -> None:
    model = build("wrn_16_1")
    with pytest.raises(KeyError) as info:
        Taps(model, ["group0", "grop1"])
    assert isinstance(info.value, TapNameError)
    message = str(info.value)
    assert "WideResNet" in message and "'grop1'" in message
    assert "'group1'" in message
    assert "named_modules()" in message
    # Nothing was hooked, because names are checked before any hook is registered.
    assert all(not m._forward_hooks for m in model.modules())


def test_tap_points_error_for_undeclared_model() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="explicitly"):
        tap_points(model, "groups")
    with pytest.raises(ValueError, match="attention_probs"):
        tap_points(build("resnet20"), "attention_probs")


# --- ViT attention -------------------------------------------------------------------------


@pytest.fixture()
def vit() -> VisionTransformer:
    model = build("vit_tiny", depth=2).eval()
    assert isinstance(model, VisionTransformer)
    return model


def test_vit_fused_and_explicit_paths_agree(vit: VisionTransformer) -> None:
    x = _images()
    with torch.no_grad():
        fused = vit(x)
        assert not any(a.explicit for a in vit.attention_layers())
        for attn in vit.attention_layers():
            attn.materialize = True
        explicit = vit(x)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)


def test_vit_attention_hooks(vit: VisionTransformer) -> None:
    names = tap_points(vit, "attention_logits") + tap_points(vit, "attention_probs")
    assert names[0] == "blocks.0.attn.logits"
    x = _images()
    with torch.no_grad():
        fused = vit(x)
        logits, out = forward_with_taps(vit, x, names)
    n_tokens = (32 // 4) ** 2 + 1
    for name in names:
        assert out[name].shape == (2, vit.heads, n_tokens, n_tokens)
    probs = out["blocks.1.attn.probs"]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, vit.heads, n_tokens))
    torch.testing.assert_close(probs, out["blocks.1.attn.logits"].softmax(-1))
    torch.testing.assert_close(logits, fused, rtol=1e-5, atol=1e-5)
    assert not any(a.explicit for a in vit.attention_layers())  # hooks are gone again


def test_vit_block_and_feature_taps(vit: VisionTransformer) -> None:
    names = tap_points(vit, "groups") + tap_points(vit, "features")
    with torch.no_grad():
        _, out = forward_with_taps(vit, _images(), names)
    assert out["blocks.1"].shape == (2, 65, 128)
    assert out["norm"].shape == (2, 65, 128)


def test_attention_copy_ignores_student_queries_and_keys(vit: VisionTransformer) -> None:
    attn = vit.attention_layers()[0]
    tokens = torch.randn(2, 65, 128)
    teacher = torch.softmax(torch.randn(2, 4, 65, 65), dim=-1)
    attn.probs_override = teacher
    with torch.no_grad():
        before = attn(tokens)
        attn.qkv.weight[: 2 * attn.dim].zero_()  # the Q and K rows
        attn.qkv.bias[: 2 * attn.dim].zero_()
        after = attn(tokens)
    torch.testing.assert_close(after, before)
    # The override really is what mixes the values.
    with torch.no_grad():
        v = attn.qkv(tokens)[..., 2 * attn.dim :].reshape(2, 65, 4, 32).transpose(1, 2)
        expected = attn.proj((teacher @ v).transpose(1, 2).reshape(2, 65, 128))
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


def test_attention_copy_gives_no_gradient_to_queries_and_keys(vit: VisionTransformer) -> None:
    attn = vit.attention_layers()[0]
    attn.probs_override = torch.softmax(torch.randn(2, 4, 65, 65), dim=-1)
    attn(torch.randn(2, 65, 128)).sum().backward()
    grad = attn.qkv.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[: 2 * attn.dim]) == 0
    assert torch.count_nonzero(grad[2 * attn.dim :]) > 0


def test_wrong_shape_override_raises(vit: VisionTransformer) -> None:
    attn = vit.attention_layers()[0]
    attn.probs_override = torch.full((2, 4, 64, 64), 1 / 64)
    with pytest.raises(ValueError, match=r"\(2, 4, 65, 65\)"):
        attn(torch.randn(2, 65, 128))


def test_conv_stem_keeps_the_token_grid() -> None:
    conv = build("vitc_micro")
    assert isinstance(conv, VisionTransformer) and conv.stem == "conv"
    assert conv.num_tokens == 65
    with torch.no_grad():
        tokens = conv.patch_embed(_images())
        assert tokens.shape == (2, 64, 8, 8)
        assert conv.eval()(_images()).shape == (2, 10)
    # the explicit and fused paths agree with a conv stem too
    x = _images()
    with torch.no_grad():
        fused = conv(x)
        for attn in conv.attention_layers():
            attn.materialize = True
        torch.testing.assert_close(conv(x), fused, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="power-of-two"):
        build("vit_tiny", stem="conv", patch_size=3, image_size=24)
    with pytest.raises(ValueError, match="stem"):
        build("vit_tiny", stem="hybrid")


def test_wrn_initialises_as_the_reference():
    # attention-transfer utils.py: He-normal (fan-in) convs and classifier, BN scale U(0, 1)
    model = build("wrn_16_2", num_classes=10, seed=0)
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert 0.0 <= gammas.min() and gammas.max() <= 1.0 and gammas.std() > 0.2
    fc = model.fc.weight  # [10, 128]
    assert fc.std().item() == pytest.approx((2 / 128) ** 0.5, rel=0.15)
    assert torch.count_nonzero(model.fc.bias) == 0


def test_catkd_student_head_initialises_as_the_reference():
    from atcourse.distill import CATKD

    student, teacher = build("resnet8x4", num_classes=100, seed=0), build("resnet8x4", 100)
    method = CATKD(student, teacher)
    head = method.student.get_submodule("fc").weight  # [100, 256, 1, 1]
    assert head.std().item() == pytest.approx((2 / 100) ** 0.5, rel=0.1)  # 0.141, not 0.036
    kept = CATKD(build("resnet8x4", 100, seed=0), teacher, init_head=False)
    assert kept.student.get_submodule("fc").weight.std().item() < 0.05  # nn.Linear's default
