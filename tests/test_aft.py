"""AFD / AFT-KD: the block by hand, alignment, adaptive weights, gradient paths, resume."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from atcourse import config, models
from atcourse import exercises as ex
from atcourse.data import load_dataset
from atcourse.distill import (
    AFTKD,
    AdaptiveLossWeights,
    afb_loss,
    align_features,
    attentional_feature_block,
    binary_mask,
    build_method,
    hparams_from_config,
    loss_decay_weights,
)
from atcourse.distill.aft import class_maps
from atcourse.distill.cam import class_activation_maps
from atcourse.train import fit

# One image, two channels on a 2x2 grid, two classes.
PREF = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]], [[-1.0, 2.0], [1.0, -4.0]]]])  # [1, 2, 2, 2]
W = torch.tensor([[1.0, 1.0], [2.0, -1.0]])  # [K=2, C=2]
# CAM class 0 = A0 + A1 = [[0, 0], [1.5, -1]];  class 1 = 2 A0 - A1 = [[3, -6], [0, 10]]
RELU = [[[1.0, 0.0], [0.5, 3.0]], [[0.0, 2.0], [1.0, 0.0]]]


def test_binary_mask_thresholds_by_hand():
    cams = torch.tensor([[[[3.0, -6.0], [0.0, 10.0]]]])  # mean |.| 4.75, mean 1.75
    assert binary_mask(cams, "mean_abs").tolist() == [[[[0.0, 0.0], [0.0, 1.0]]]]
    assert binary_mask(cams, "mean").tolist() == [[[[1.0, 0.0], [0.0, 1.0]]]]
    assert binary_mask(cams, "zero").tolist() == [[[[1.0, 0.0], [0.0, 1.0]]]]
    with pytest.raises(ValueError, match="'mean_abs', 'mean', 'zero'"):
        binary_mask(cams, "median")
    with pytest.raises(ValueError, match="gradient"):
        binary_mask(cams, gradient="sigmoid")


def test_binary_mask_gradient_none_and_clipped_straight_through():
    cams = torch.tensor([[[[5.0, -6.0], [4.0, 6.0]]]], requires_grad=True)  # mean |.| 5.25
    assert not binary_mask(cams, gradient="none").requires_grad
    ste = binary_mask(cams, gradient="ste")
    assert ste.tolist() == [[[[0.0, 0.0], [0.0, 1.0]]]]  # the same forward value
    (ste * torch.arange(1.0, 5.0).view(1, 1, 2, 2)).sum().backward()
    # identity within one unit of the threshold (5.0 and 6.0), flat beyond (-6.0 and 4.0)
    assert cams.grad.tolist() == [[[[1.0, 0.0], [0.0, 4.0]]]]
    zero = torch.tensor([[[[0.5, -3.0], [2.0, -0.2]]]], requires_grad=True)
    binary_mask(zero, "zero", "ste").sum().backward()
    assert zero.grad.tolist() == [[[[1.0, 0.0], [0.0, 1.0]]]]


def test_attentional_feature_block_by_hand():
    # class 1's map [[3, -6], [0, 10]] -> mean_abs mask [[0, 0], [0, 1]]
    labels = torch.tensor([1])
    afb = attentional_feature_block(PREF, W, labels)
    mask = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert afb.shape == (1, 2, 2, 2)
    assert torch.equal(afb[0], torch.tensor(RELU) + mask)  # the mask added to each channel
    stacked = attentional_feature_block(PREF, W, labels, merge="concat")
    assert stacked.shape == (1, 3, 2, 2)
    assert torch.equal(stacked[0, :2], torch.tensor(RELU)) and torch.equal(stacked[0, 2], mask)
    # class 0's map [[0, 0], [1.5, -1]]: mean |.| 0.625 -> only the 1.5 survives
    afb0 = attentional_feature_block(PREF, W, torch.tensor([0]))
    assert torch.equal(
        afb0[0] - torch.tensor(RELU), torch.tensor([[0.0, 0.0], [1.0, 0.0]]).expand(2, 2, 2)
    )


def test_class_maps_picks_each_images_class():
    cams = torch.arange(2 * 3 * 2 * 2.0).view(2, 3, 2, 2)
    picked = class_maps(cams, torch.tensor([2, 0]))
    assert picked.shape == (2, 1, 2, 2)
    assert torch.equal(picked[0, 0], cams[0, 2]) and torch.equal(picked[1, 0], cams[1, 0])
    with pytest.raises(ValueError, match=r"classes \[B\]"):
        class_maps(cams, torch.tensor([0]))


def test_gradient_reaches_preact_and_weights_only_as_the_options_say():
    # class 0's map [[0, 0], [1.5, -1]], threshold 0.625: three positions within one unit
    labels = torch.tensor([0])
    for gradient in ("none", "ste"):
        pre = PREF.clone().requires_grad_(True)
        weight = W.clone().requires_grad_(True)
        attentional_feature_block(pre, weight, labels, gradient=gradient).sum().backward()
        negative = PREF < 0
        if gradient == "none":
            # only through ReLU(PreF): nothing where PreF < 0, nothing into the 1x1 conv
            assert torch.all(pre.grad[negative] == 0) and torch.all(pre.grad[~negative] == 1)
            assert weight.grad is None
        else:
            # the mask's gradient passes straight through into the CAM, hence into the
            # negative positions of PreF and into the 1x1 convolution's weights
            assert torch.any(pre.grad[negative] != 0)
            assert weight.grad is not None and torch.any(weight.grad[0] != 0)
            assert torch.all(weight.grad[1] == 0)  # class 1's row is not the label's
            # position (1, 1), -1 against a threshold of 0.625, is outside the window
            assert pre.grad[0, :, 1, 1].tolist() == [1.0, 0.0]


def test_align_features_pool_and_conv():
    student = torch.randn(2, 4, 8, 8)
    teacher = torch.randn(2, 8, 16, 16)
    s, t = align_features(student, teacher)
    assert s.shape == t.shape == (2, 4, 8, 8)
    assert torch.equal(s, student)
    # block pooling: adjacent teacher channels averaged in pairs, positions in 2x2 blocks
    expected = teacher.view(2, 4, 2, 16, 16).mean(2)
    expected = torch.nn.functional.avg_pool2d(expected, 2)
    assert torch.allclose(t, expected, atol=1e-6)
    projection = torch.nn.Conv2d(4, 8, 1, bias=False)
    s, t = align_features(student, teacher, projection)
    assert s.shape == t.shape == (2, 8, 8, 8)
    with pytest.raises(ValueError, match=r"nn.Conv2d\(C_s, C_t, 1\)"):
        align_features(student, teacher, torch.nn.Conv2d(4, 5, 1))


def test_afb_loss_is_the_mse_with_the_teacher_fixed():
    s = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)
    t = torch.tensor([[[[0.0, 4.0]]]], requires_grad=True)
    loss = afb_loss(s, t)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert t.grad is None and s.grad.tolist() == [[[[1.0, -2.0]]]]
    with pytest.raises(ValueError, match="align_features"):
        afb_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


# --------------------------------------------------------------------------- weights

# A scripted history of epoch-mean losses: CE falls fast, AFD slowly.
HISTORY = [(2.0, 1.0), (1.0, 0.8), (0.5, 0.6), (0.4, 0.5)]
# By hand: L^0 = (2, 1). After epoch 1: Dr = (0.5, 0.8), mean 0.65 -> (0.5/0.65, 0.8/0.65);
# epoch 2: Dr = (0.25, 0.6), mean 0.425; epoch 3: Dr = (0.2, 0.5), mean 0.35.
EXPECTED = [
    (1.0, 1.0),
    (0.5 / 0.65, 0.8 / 0.65),
    (0.25 / 0.425, 0.6 / 0.425),
    (0.2 / 0.35, 0.5 / 0.35),
]


def test_loss_decay_weights_by_hand():
    w = loss_decay_weights({"ce": 1.0, "afd": 0.8}, {"ce": 2.0, "afd": 1.0})
    assert w["ce"] == pytest.approx(0.5 / 0.65) and w["afd"] == pytest.approx(0.8 / 0.65)
    assert w["ce"] + w["afd"] == pytest.approx(2.0)
    three = loss_decay_weights({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert sum(three.values()) == pytest.approx(3.0)
    assert loss_decay_weights({"ce": 0.0, "afd": 0.0}, {"ce": 1.0, "afd": 1.0}) == {
        "ce": 1.0,
        "afd": 1.0,
    }
    with pytest.raises(ValueError, match="same terms"):
        loss_decay_weights({"ce": 1.0}, {"ce": 1.0, "afd": 1.0})


def test_adaptive_weights_follow_a_scripted_history():
    weights = AdaptiveLossWeights(("ce", "afd"))
    assert weights.weights == {"ce": 1.0, "afd": 1.0}  # the first epoch
    for (ce, afd), (alpha, beta) in zip(HISTORY, EXPECTED, strict=True):
        new = weights.update({"ce": ce, "afd": afd, "total": ce + afd})
        assert new["ce"] == pytest.approx(alpha) and new["afd"] == pytest.approx(beta)
        assert new["ce"] + new["afd"] == pytest.approx(2.0)
    assert weights.initial == {"ce": 2.0, "afd": 1.0}
    # the slower-decaying term (AFD) ends up with the larger weight
    assert weights.weights["afd"] > 1.0 > weights.weights["ce"]
    with pytest.raises(ValueError, match="'afd'"):
        weights.update({"ce": 1.0})


def test_fixed_weights_do_not_move():
    weights = AdaptiveLossWeights(("ce", "afd"), adaptive=False, fixed=(1.0, 3.0))
    for ce, afd in HISTORY:
        assert weights.update({"ce": ce, "afd": afd}) == {"ce": 1.0, "afd": 3.0}
    with pytest.raises(ValueError, match="non-negative"):
        AdaptiveLossWeights(("ce", "afd"), adaptive=False, fixed=(1.0,))


# --------------------------------------------------------------------------- the method


def _pair(student="wrn_10_1", teacher="wrn_10_2", seed=0):
    torch.manual_seed(seed)
    return models.build(student), models.build(teacher)


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _afd_grads(method):
    """Gradients of the AFD term alone, by parameter name (None where none arrived)."""
    method.train()
    method.zero_grad(set_to_none=True)
    images, labels = _batch()
    out = method(images, labels)
    out.loss_terms["afd"].backward()
    return {name: p.grad for name, p in method.named_parameters()}


def _nonzero(grad):
    return grad is not None and bool(torch.any(grad != 0))


@pytest.mark.parametrize(
    ("options", "fc", "extra"),
    [
        ({"align": "pool"}, False, set()),  # the mask is a constant; no learned parts
        ({}, False, {"projection.weight"}),  # the default: a learned 1x1 projection
        ({"align": "pool", "gradient": "ste"}, True, set()),  # through the mask into fc
        (
            {"gradient": "ste", "cam_source": "learned"},
            False,
            {"projection.weight", "cam_conv.weight"},
        ),
    ],
)
def test_gradient_paths_of_the_method(options, fc, extra):
    student, teacher = _pair()
    method = AFTKD(student, teacher, **options)
    grads = _afd_grads(method)
    assert all(grads[n] is None for n in grads if n.startswith("teacher."))
    assert _nonzero(grads["student.fc.weight"]) == fc
    assert _nonzero(grads["student.conv0.weight"])  # the features always train the student
    learned = {n for n in grads if not n.startswith(("student.", "teacher."))}
    assert learned == extra
    trainable = {id(p) for p in method.trainable_parameters()}
    params = dict(method.named_parameters())
    for name in extra:
        assert _nonzero(grads[name])
        assert id(params[name]) in trainable  # the trainer's optimizer updates it
        assert name in method.trainable_state()  # and checkpoints store it


def test_method_logs_terms_and_weights():
    student, teacher = _pair()
    out = AFTKD(student, teacher)(*_batch())
    assert set(out.loss_terms) == {"ce", "afd"} and set(out.diagnostics) == {"afd/feat", "afd/mask"}
    assert out.weights == {"ce": 1.0, "afd": 1.0}
    assert 0.0 <= out.diagnostics["afd/mask"].item() <= 1.0
    fixed = AFTKD(*_pair(), weighting="fixed", fixed_weights=(0.5, 2.0))
    assert fixed(*_batch()).weights["afd"] == 2.0


@pytest.mark.parametrize(
    ("student", "teacher"), [("resnet20", "resnet8x4"), ("wrn_10_1", "wrn_10_2")]
)
@pytest.mark.parametrize("source", ["preact", "features"])
def test_taps_and_channels_for_both_families(student, teacher, source):
    s, t = _pair(student, teacher)
    method = AFTKD(s, t, source=source, align="conv")
    expected = models.tap_points(s, source)[-1]
    assert method.layer == expected
    assert method.projection.weight.shape == (t.num_features, s.num_features, 1, 1)
    _, s_parts, t_parts = method.blocks(*_batch(4))
    assert s_parts["afb"].shape == t_parts["afb"].shape == (4, t.num_features, 8, 8)
    assert s_parts["mask"].shape == (4, 1, 8, 8)


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="gradient='ste'"):
        AFTKD(*_pair(), cam_source="learned")
    with pytest.raises(ValueError, match="'conv', 'pool'"):
        AFTKD(*_pair(), align="interpolate")
    student, teacher = _pair()
    teacher_100 = models.build("wrn_10_2", num_classes=100)
    with pytest.raises(ValueError, match="classes"):
        AFTKD(student, teacher_100)
    assert all(p.requires_grad for p in teacher_100.parameters())  # left untouched


def test_build_from_config_names():
    cfg = config.configure("smoke", verbose=False, aft_align="conv", aft_gradient="ste",
                           aft_weighting="fixed")  # fmt: skip
    kwargs = hparams_from_config("aft", cfg)
    assert kwargs == {"align": "conv", "gradient": "ste", "weighting": "fixed"}
    method = build_method("aft", *_pair(), **kwargs)
    assert method.hparams()["align"] == "conv" and method.weighting == "fixed"
    with pytest.raises(config.ConfigError, match="'add', 'concat'"):
        config.configure("smoke", verbose=False, aft_merge="multiply")


def test_extra_state_survives_a_checkpoint():
    method = AFTKD(*_pair())
    for epoch, (ce, afd) in enumerate(HISTORY[:3]):
        method.on_epoch_end(epoch, {"ce": ce, "afd": afd})
    saved = copy.deepcopy(method.trainable_state())
    fresh = AFTKD(*_pair(seed=5))
    assert fresh.alpha == 1.0
    fresh.load_trainable_state(saved)
    assert fresh.alpha == pytest.approx(EXPECTED[2][0]) and fresh.beta == pytest.approx(
        EXPECTED[2][1]
    )
    assert fresh.loss_weights.initial == {"ce": 2.0, "afd": 1.0}
    fresh.on_epoch_end(3, {"ce": HISTORY[3][0], "afd": HISTORY[3][1]})
    assert fresh.alpha == pytest.approx(EXPECTED[3][0])  # continues from L^0, not afresh


def test_fit_records_alpha_beta_and_resume_continues_them(tmp_path):
    cfg = config.configure("smoke", verbose=False, device="cpu", train_size=128, test_size=64,
                           batch_size=64, epochs=4)  # fmt: skip
    train_set = load_dataset("shapes", "train", size=128)
    test_set = load_dataset("shapes", "test", size=64)

    def method():
        student, teacher = _pair()
        return AFTKD(student, teacher, align="conv")

    full = fit(method(), cfg, train_set, test_set, run_dir=tmp_path / "a", progress=False)
    alphas = [row["weight_ce"] for row in full.history]
    betas = [row["weight_afd"] for row in full.history]
    assert alphas[:2] == [1.0, 1.0] and betas[:2] == [1.0, 1.0]  # epochs 1-2: no rates yet
    assert alphas[2] != 1.0 and all(a + b == pytest.approx(2.0) for a, b in zip(alphas, betas))
    # the weights of epoch 3 come from epoch 2's losses against epoch 1's
    h = full.history
    expected = loss_decay_weights(
        {"ce": h[1]["loss_ce"], "afd": h[1]["loss_afd"]},
        {"ce": h[0]["loss_ce"], "afd": h[0]["loss_afd"]},
    )
    assert alphas[2] == pytest.approx(expected["ce"])

    def interrupt(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(method(), cfg, train_set, test_set, run_dir=tmp_path / "b", progress=False,
            callbacks=[interrupt])  # fmt: skip
    resumed = fit(method(), cfg, train_set, test_set, run_dir=tmp_path / "b", progress=False,
                  resume=True)  # fmt: skip
    weights = [(r["weight_ce"], r["weight_afd"]) for r in full.history]
    assert [(r["weight_ce"], r["weight_afd"]) for r in resumed.history] == weights
    assert resumed.method.loss_weights.state() == full.method.loss_weights.state()
    assert torch.equal(resumed.method.projection.weight, full.method.projection.weight)


# --------------------------------------------------------------------------- exercises


def _rejects(checker, answer, *words):
    with pytest.raises(ex.ExerciseError) as info:
        checker(answer)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_check_decay_weights(capsys):
    def reference(ce, afd, ce0, afd0):
        w = loss_decay_weights({"ce": ce, "afd": afd}, {"ce": ce0, "afd": afd0})
        return w["ce"], w["afd"]

    ex.check_decay_weights(reference)
    assert capsys.readouterr().out.startswith("✓")

    def rates(ce, afd, ce0, afd0):
        return ce / ce0, afd / afd0

    def by_sum(ce, afd, ce0, afd0):
        a, b = rates(ce, afd, ce0, afd0)
        return a / (a + b), b / (a + b)

    def inverted(ce, afd, ce0, afd0):
        a, b = ce0 / ce, afd0 / afd
        return 2 * a / (a + b), 2 * b / (a + b)

    def swapped(ce, afd, ce0, afd0):
        return reference(ce, afd, ce0, afd0)[::-1]

    _rejects(ex.check_decay_weights, rates, "mean")
    _rejects(ex.check_decay_weights, by_sum, "sum of the rates")
    _rejects(ex.check_decay_weights, inverted, "rates inverted")
    _rejects(ex.check_decay_weights, swapped, "swapped")
    _rejects(ex.check_decay_weights, lambda *a: 1.0, "two numbers")


def test_check_attentional_feature_block(capsys):
    ex.check_attentional_feature_block(attentional_feature_block)
    assert capsys.readouterr().out.startswith("✓")

    def no_relu(pre, w, y):
        return attentional_feature_block(pre, w, y) - F.relu(pre) + pre

    def post_cam(pre, w, y):
        return attentional_feature_block(F.relu(pre), w, y)

    def concat(pre, w, y):
        return attentional_feature_block(pre, w, y, merge="concat")

    def zero(pre, w, y):
        return attentional_feature_block(pre, w, y, threshold="zero")

    def soft(pre, w, y):
        return F.relu(pre) + class_maps(class_activation_maps(pre, w), y)

    _rejects(ex.check_attentional_feature_block, no_relu, "ReLU")
    _rejects(ex.check_attentional_feature_block, post_cam, "pre-activation")
    _rejects(ex.check_attentional_feature_block, concat, "extra channel")
    _rejects(ex.check_attentional_feature_block, zero, "not above zero")
    _rejects(ex.check_attentional_feature_block, soft, "binarize")


def test_aft_questions_and_stubs(capsys):
    for qid in ("aft_mask_gradient", "aft_weights", "aft_scale"):
        q = ex.QUESTIONS[qid]
        ex.check_choice(qid, q["correct"])
        assert capsys.readouterr().out.startswith("✓")

    def stub(*args):
        raise NotImplementedError

    for checker in (ex.check_decay_weights, ex.check_attentional_feature_block):
        with pytest.raises(NotImplementedError):
            checker(stub)
