"""Tests for class activation maps (atcourse.distill.cam)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcourse import configure, fit, load_dataset
from atcourse import exercises as ex
from atcourse.config import parameters
from atcourse.distill import (
    CAT_KD_PAIRS,
    CATKD,
    binarize_cams,
    build_method,
    cam_alignment,
    cat_loss,
    check_cam_identity,
    class_activation_maps,
    forward_cams,
    hparams_from_config,
    select_classes,
)
from atcourse.distill.cat_kd import DEFAULT_BETA, DEFAULT_NORMALIZED_BETA
from atcourse.models import CAMHead, Taps, available, build, tap_points, with_cam_head


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


# --------------------------------------------------------------------------- CAM head

CNNS = [a for a in available() if not a.startswith("vit")]


@pytest.mark.parametrize("arch", CNNS)
def test_cam_identity_on_every_built_in_cnn(arch: str) -> None:
    torch.manual_seed(0)
    model = build(arch).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain_logits = model(images)
    # untrained deep ResNets in eval mode give large logits: compare relative to their size
    tol = 1e-5 * max(1.0, plain_logits.abs().max().item())
    # the plain model: pooled CAMs plus the bias are the logits
    assert check_cam_identity(model, images) < tol
    bias = model.get_submodule(tap_points(model, "classifier")[0]).bias.detach()
    converted = with_cam_head(model, copy=True)
    head = converted.get_submodule(tap_points(model, "classifier")[0])
    assert isinstance(head, CAMHead) and head.weight.shape[-2:] == (1, 1)
    # the converted model: its logits are the pooled CAMs, i.e. the old logits minus the bias
    assert check_cam_identity(converted, images) < tol
    with torch.no_grad():
        logits, cams = forward_cams(converted, images)
    assert cams.shape[:2] == (2, 10)
    assert torch.allclose(cams.mean(dim=(2, 3)), logits, atol=tol)
    assert torch.allclose(logits, plain_logits - bias, atol=tol)
    assert isinstance(model.get_submodule("fc"), nn.Linear)  # copy=True left it alone


def test_cam_head_is_a_bias_free_1x1_convolution() -> None:
    linear = nn.Linear(3, 2)
    head = CAMHead.from_linear(linear)
    conv = nn.Conv2d(3, 2, 1, bias=False)
    conv.weight.data.copy_(linear.weight.data[:, :, None, None])
    features = torch.randn(4, 3, 5, 5)
    assert torch.allclose(head(features), conv(features), atol=1e-6)
    # on pooled features the head is the linear layer without its bias
    pooled = features.mean(dim=(2, 3))
    assert torch.allclose(head(pooled), linear(pooled) - linear.bias, atol=1e-6)
    assert torch.allclose(head(pooled), head(features).mean(dim=(2, 3)), atol=1e-6)
    assert "bias=False" in repr(head)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        head(torch.randn(2, 4, 5, 5))


def test_with_cam_head_in_place_keeps_the_weights_and_frozenness() -> None:
    model = build("wrn_16_1")
    weight = model.fc.weight.detach().clone()
    same = with_cam_head(model)
    assert same is model and isinstance(model.fc, CAMHead)
    assert torch.equal(model.fc.weight.flatten(1), weight)
    assert with_cam_head(model) is model  # converting twice changes nothing
    frozen = build("wrn_16_1")
    for param in frozen.parameters():
        param.requires_grad_(False)
    assert not with_cam_head(frozen).fc.weight.requires_grad


def test_with_cam_head_errors_name_the_fix() -> None:
    model = build("wrn_16_1")
    with pytest.raises(TypeError, match="nn.Linear"):
        with_cam_head(model, classifier="bn")
    with pytest.raises(KeyError, match="fc"):
        with_cam_head(model, classifier="fcc")


def test_check_cam_identity_catches_the_wrong_feature_layer() -> None:
    model = build("wrn_16_1")
    # "bn" is the map before the final ReLU: not what the pooling sees
    with pytest.raises(ValueError, match="features="):
        check_cam_identity(model, torch.randn(2, 3, 32, 32), features="bn")


# --------------------------------------------------------------------------- the CAT loss

# Two images, one class, 4x4 maps whose 2x2 blocks have easy means.
S = torch.tensor(
    [
        [[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]]],
        [[[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]],
    ]
)  # pooled 2x2: [[1, 2], [0, 4]] and [[1, 0], [0, 0]]
T = torch.zeros(2, 1, 4, 4)
T[0, 0, :2, :2] = 3.0  # pooled [[3, 0], [0, 0]]
T[1, 0] = 1.0  # pooled [[1, 1], [1, 1]]


def test_cat_loss_by_hand() -> None:
    # differences: [[-2, 2], [0, 4]] and [[0, -1], [-1, -1]] -> squares sum 24 + 3 = 27
    assert cat_loss(S, T, pool=2).item() == pytest.approx(27 / 8)
    # R = 1: the maps' means, 7/4 vs 3/4 and 1/4 vs 1 -> (1 + 9/16) / 2
    assert cat_loss(S, T, pool=1).item() == pytest.approx(25 / 32)
    # R = 4: no pooling, the plain MSE
    assert cat_loss(S, T, pool=4).item() == pytest.approx((S - T).pow(2).mean().item())


def test_cat_loss_normalized_by_hand() -> None:
    # pooled maps divided by their L2 norm over the 2x2 cells
    s1 = torch.tensor([1.0, 2.0, 0.0, 4.0]) / 21**0.5
    t1 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    s2 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    t2 = torch.tensor([0.5, 0.5, 0.5, 0.5])
    expected = ((s1 - t1).pow(2).sum() + (s2 - t2).pow(2).sum()) / 8
    assert cat_loss(S, T, pool=2, normalize=True).item() == pytest.approx(expected.item())
    # scaling either map changes nothing once normalized
    assert cat_loss(10 * S, T, normalize=True).item() == pytest.approx(expected.item())


def test_cat_loss_splits_into_logit_and_layout_terms() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(3, 5, 8, 8), torch.randn(3, 5, 8, 8)
    dz = s.mean(dim=(2, 3)) - t.mean(dim=(2, 3))
    ps, pt = F.adaptive_avg_pool2d(s, 2), F.adaptive_avg_pool2d(t, 2)
    layout = (ps - ps.mean(dim=(2, 3), keepdim=True)) - (pt - pt.mean(dim=(2, 3), keepdim=True))
    expected = dz.pow(2).mean() + layout.pow(2).mean()
    assert cat_loss(s, t, pool=2).item() == pytest.approx(expected.item(), rel=1e-5)
    assert cat_loss(s, t, pool=1).item() == pytest.approx(dz.pow(2).mean().item(), rel=1e-5)


def test_cat_loss_pools_different_sizes_and_detaches_the_teacher() -> None:
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = cat_loss(s, t, pool=2)
    expected = (F.adaptive_avg_pool2d(s, 2) - F.adaptive_avg_pool2d(t, 2)).pow(2).mean()
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert cat_loss(s.bfloat16(), t.bfloat16()).dtype == torch.float32


def test_cat_loss_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="larger than the CAMs"):
        cat_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), pool=8)
    with pytest.raises(ValueError, match="batch and classes"):
        cat_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="positive integer"):
        cat_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), pool=0)
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        cat_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


def test_binarized_then_pooled_targets_are_fractions() -> None:
    cams = torch.tensor([[[[4.0, 0.0, -1.0, 3.0], [0.0, 0.0, 0.0, 3.0]]]])  # mean |.| = 11/8
    binary = binarize_cams(cams)
    assert binary.tolist() == [[[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]]]
    pooled = F.adaptive_avg_pool2d(binary, (1, 2))
    assert pooled.flatten().tolist() == [0.25, 0.5]


def test_select_classes_top_and_bottom() -> None:
    logits = torch.tensor([[0.1, 3.0, -2.0, 1.0], [5.0, 4.0, 3.0, -1.0]])
    assert select_classes(logits, 2, "top").tolist() == [[1, 3], [0, 1]]
    assert sorted(select_classes(logits, 2, "bottom")[0].tolist()) == [0, 2]
    assert sorted(select_classes(logits, 2, "bottom")[1].tolist()) == [2, 3]
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        select_classes(logits, 5)
    with pytest.raises(ValueError, match="top, bottom"):
        select_classes(logits, 1, "middle")


def test_cam_alignment_uses_the_positive_part_of_the_class_map() -> None:
    model = build("wrn_16_1").eval()
    images = torch.randn(3, 3, 32, 32)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, :16] = True  # the top half
    labels = torch.tensor([0, 1, 2])
    scores = cam_alignment(model, images, masks, labels)
    with torch.no_grad():
        _, cams = forward_cams(model, images)
    maps = F.relu(cams[torch.arange(3), labels])  # [3, 8, 8]
    expected = maps[:, :4].flatten(1).sum(1) / maps.flatten(1).sum(1)
    assert torch.allclose(scores, expected, atol=1e-6)


# --------------------------------------------------------------------------- the method


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build("wrn_16_1"), build("wrn_16_2")


def test_catkd_loss_terms_and_gradients() -> None:
    student, teacher = _pair()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    method = build_method("cat_kd", student, teacher, beta=3.0)
    assert method.name == "cat_kd"
    assert method.student is student and isinstance(student.fc, CAMHead)
    assert isinstance(teacher.fc, nn.Linear)  # the caller's teacher keeps its classifier
    assert isinstance(method.teacher.fc, CAMHead)
    out = method(images, labels)
    assert set(out.loss_terms) == {"ce", "cat"}  # no logit-KD term
    assert out.weights == {"ce": 1.0, "cat": 3.0}
    _, cams_s = forward_cams(student, images)
    with torch.no_grad():
        _, cams_t = forward_cams(method.teacher, images)
    assert out.loss_terms["cat"].item() == pytest.approx(cat_loss(cams_s, cams_t).item(), rel=1e-5)
    assert out.loss_terms["ce"].item() == pytest.approx(
        F.cross_entropy(student(images), labels).item(), rel=1e-5
    )
    out.total.backward()
    assert student.fc.weight.grad is not None
    assert all(p.grad is None for p in method.teacher.parameters())


def test_catkd_binarized_partial_and_presets() -> None:
    student, teacher = _pair()
    images = torch.randn(4, 3, 32, 32)
    method = build_method("cat_kd_bin", student, teacher, cam_classes=3, cam_selection="bottom")
    assert method.name == "cat_kd_bin" and method.cam_normalize and method.cam_binarize
    assert method.beta == DEFAULT_NORMALIZED_BETA
    _, s_cams, t_cams = method.transferred_cams(images)
    assert s_cams.shape == t_cams.shape == (4, 3, 8, 8)
    assert set(t_cams.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        t_logits, all_t = forward_cams(method.teacher, images)
    index = t_logits.topk(3, dim=1, largest=False).indices
    expected = binarize_cams(all_t).gather(1, index[:, :, None, None].expand(-1, -1, 8, 8))
    assert torch.equal(t_cams, expected)
    preset = CATKD(*_pair(), cat_pair="resnet32x4/ShuffleV1")
    assert (preset.beta, preset.cam_resolution, preset.cam_normalize) == (600.0, 4, True)
    override = CATKD(*_pair(), cat_pair="wrn_40_2/wrn_16_2", beta=1.0)
    assert (override.beta, override.cam_resolution, override.cam_normalize) == (1.0, 2, False)
    assert CATKD(*_pair()).beta == DEFAULT_BETA


def test_catkd_presets_match_the_config_choices() -> None:
    assert tuple(CAT_KD_PAIRS) == parameters()["cat_pair"].choices
    assert CAT_KD_PAIRS["resnet32x4/resnet8x4"].beta == 15.0
    assert CAT_KD_PAIRS["wrn_40_2/wrn_16_2"].beta == 12.0


def test_catkd_bad_arguments_leave_the_models_untouched() -> None:
    student, teacher = _pair()
    for kwargs, match in [
        ({"cat_pair": "wrn/wrn"}, "unknown cat_pair"),
        ({"beta": -1.0}, "beta"),
        ({"cam_selection": "middle"}, "cam_selection"),
        ({"cam_classes": 11}, r"\[1, 10\]"),
        ({"cam_resolution": 0}, "cam_resolution"),
        ({"features": "relux"}, "relu"),
    ]:
        with pytest.raises((ValueError, KeyError), match=match):
            CATKD(student, teacher, **kwargs)
    assert isinstance(student.fc, nn.Linear) and student.fc.weight.requires_grad
    with pytest.raises(ValueError, match="10 classes and the teacher 5"):
        CATKD(build("wrn_16_1"), build("wrn_16_2", num_classes=5))
    with pytest.raises(ValueError, match="fixes cam_binarize=True"):
        build_method("cat_kd_bin", *_pair(), cam_binarize=False)


def test_catkd_builds_from_a_configuration() -> None:
    cfg = configure("smoke", verbose=False, beta=2.0, cam_resolution=4, cam_binarize=True)
    hparams = hparams_from_config("cat_kd", cfg)
    assert hparams == {
        "beta": 2.0,
        "cam_resolution": 4,
        "cam_binarize": True,
    }
    method = build_method("cat_kd", *_pair(), **hparams)
    assert method.name == "cat_kd_bin" and method.cam_resolution == 4


def test_catkd_trains_and_resumes(tmp_path) -> None:
    cfg = configure("smoke", verbose=False).replace(train_size=128, test_size=64, batch_size=32)
    train_set = load_dataset("shapes", "train", size=128)
    test_set = load_dataset("shapes", "test", size=64)
    student, teacher = _pair()
    method = build_method("cat_kd", student, teacher, beta=1.0)
    result = fit(method, cfg, train_set, test_set, run_dir=tmp_path / "run", progress=False)
    row = result.history[-1]
    assert {"loss_ce", "loss_cat", "test_acc"} <= set(row)
    assert row["weight_cat"] == 1.0
    again = build_method("cat_kd", *_pair(), beta=1.0)
    resumed = fit(again, cfg, train_set, test_set, run_dir=tmp_path / "run", resume=True,
                  progress=False)  # fmt: skip
    assert resumed.history == result.history
    assert torch.equal(again.student.fc.weight, method.student.fc.weight)


# --------------------------------------------------------------------------- exercises


def _rejects(checker, answer, *words: str) -> None:
    with pytest.raises(ex.ExerciseError) as info:
        checker(answer)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_check_class_activation_maps(capsys) -> None:
    ex.check_class_activation_maps(class_activation_maps)
    assert capsys.readouterr().out.startswith("✓")
    ex.check_class_activation_maps(lambda a, w: torch.einsum("kc,bchw->bkhw", w, a))
    assert capsys.readouterr().out.startswith("✓")
    _rejects(ex.check_class_activation_maps, lambda a, w: torch.einsum("kc,bchw->bhwk", w, a),
             "wrong order")  # fmt: skip
    _rejects(ex.check_class_activation_maps,
             lambda a, w: torch.einsum("kc,bchw->bkhw", w, a) / a.shape[1], "SUM")  # fmt: skip
    _rejects(ex.check_class_activation_maps,
             lambda a, w: F.relu(class_activation_maps(a, w)), "ReLU")  # fmt: skip
    _rejects(ex.check_class_activation_maps, lambda a, w: torch.einsum("ck,bchw->bkhw", w, a),
             "einsum")  # fmt: skip


def test_check_cat_loss(capsys) -> None:
    ex.check_cat_loss(lambda s, t, r: cat_loss(s, t, pool=r))
    assert capsys.readouterr().out.startswith("✓")

    def pooled(s, t, r):
        return F.adaptive_avg_pool2d(s, r), F.adaptive_avg_pool2d(t.detach(), r)

    def summed(s, t, r):
        a, b = pooled(s, t, r)
        return (a - b).pow(2).sum()

    def max_pooled(s, t, r):
        a, b = F.adaptive_max_pool2d(s, r), F.adaptive_max_pool2d(t.detach(), r)
        return (a - b).pow(2).mean()

    def ignores_r(s, t, r):
        return cat_loss(s, t, pool=2)

    def not_detached(s, t, r):
        return (F.adaptive_avg_pool2d(s, r) - F.adaptive_avg_pool2d(t, r)).pow(2).mean()

    def fixed_kernel(s, t, r):
        return (F.avg_pool2d(s, r) - F.avg_pool2d(t.detach(), r)).pow(2).mean()

    _rejects(ex.check_cat_loss, summed, "mean over batch")
    _rejects(ex.check_cat_loss, max_pooled, "max-pooled")
    _rejects(ex.check_cat_loss, ignores_r, "ignored R")
    _rejects(ex.check_cat_loss, not_detached, "detach")
    _rejects(ex.check_cat_loss, fixed_kernel, "adaptive_avg_pool2d")
    _rejects(ex.check_cat_loss, lambda s, t, r: cat_loss(s, t, r, normalize=True), "normalized")


def test_cam_questions_and_stubs() -> None:
    for qid in ("cat_r1", "cam_bias"):
        q = ex.QUESTIONS[qid]
        assert set(q["feedback"]) == set(q["choices"]) - {q["correct"]}

    def stub(*args):
        raise NotImplementedError("Exercise: write your solution here")

    for checker in (ex.check_class_activation_maps, ex.check_cat_loss):
        with pytest.raises(NotImplementedError):
            checker(stub)
