"""ViT attention transfer: the distillation loss by hand, attention copy, the methods, the tools."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atcourse import config, distill
from atcourse.bench import materialization_cost
from atcourse.data import DeviceLoader, load_dataset
from atcourse.distill import FineTune, build_method, hparams_from_config
from atcourse.distill.vit_attention import (
    AttentionCopy,
    AttentionDistillation,
    attention_agreement,
    attention_distillation_loss,
    attention_overlap,
    default_layers,
)
from atcourse.metrics import evaluate
from atcourse.models import build
from atcourse.models.vit_maps import (
    attention_probs,
    attention_rollout,
    cls_attention,
    resolve_layers,
)
from atcourse.train import fit


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _vit(depth: int = 3, **kw):
    return build("vit_tiny", depth=depth, dim=32, heads=2, **kw)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32)


# --- the loss --------------------------------------------------------------------------------


def test_loss_by_hand():
    # One batch, one head, two queries over two keys.
    s = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]])
    t = torch.tensor([[[[math.log(3.0), 0.0], [0.0, 0.0]]]])
    # row 0: p = (3/4, 1/4), q = (1/2, 1/2): KL = 3/4 log(3/2) + 1/4 log(1/2)
    # row 1: p = (1/2, 1/2), q = (e/(1+e), 1/(1+e)): KL = 1/2 log((1+e)/(2e)) + 1/2 log((1+e)/2)
    e = math.e
    row0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    row1 = 0.5 * math.log((1 + e) / (2 * e)) + 0.5 * math.log((1 + e) / 2)
    got = attention_distillation_loss(s, t)
    assert got.shape == ()
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_loss_sums_keys_and_averages_batch_heads_queries():
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    p = t.softmax(-1)
    per_row = (p * (p.log() - s.log_softmax(-1))).sum(-1)  # (3, 4, 5)
    assert attention_distillation_loss(s, t).item() == pytest.approx(per_row.mean().item(), 1e-5)
    # the paper's cross-entropy differs from it by the teacher's entropy only
    ce = -(p * s.log_softmax(-1)).sum(-1).mean()
    entropy = -(p * p.log()).sum(-1).mean()
    assert (ce - entropy).item() == pytest.approx(attention_distillation_loss(s, t).item(), 1e-5)


def test_loss_is_zero_when_the_maps_agree():
    t = torch.randn(2, 3, 7, 7)
    assert attention_distillation_loss(t.clone(), t).abs().item() < 1e-6
    # a constant per row does not change a softmax, so it does not change the loss either
    shifted = t + torch.randn(2, 3, 7, 1)
    assert attention_distillation_loss(shifted, t).abs().item() < 1e-6
    assert attention_distillation_loss(torch.randn(2, 3, 7, 7), t).item() > 0


def test_loss_sends_gradient_to_the_student_only():
    s = torch.randn(2, 2, 5, 5, requires_grad=True)
    t = torch.randn(2, 2, 5, 5, requires_grad=True)
    attention_distillation_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_loss_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="same heads and tokens"):
        attention_distillation_loss(torch.randn(1, 2, 5, 5), torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, heads, N, N\)"):
        attention_distillation_loss(torch.randn(2, 5, 5), torch.randn(2, 5, 5))


def test_overlap():
    p = torch.softmax(torch.randn(2, 2, 4, 4), -1)
    assert attention_overlap(p, p).item() == pytest.approx(1.0)
    one_hot_a = torch.eye(4).expand(1, 1, 4, 4)
    one_hot_b = torch.eye(4).roll(1, dims=-1).expand(1, 1, 4, 4)
    assert attention_overlap(one_hot_a, one_hot_b).item() == 0.0


# --- layers ----------------------------------------------------------------------------------


def test_default_layers_follow_the_released_code_and_name_the_papers_text():
    # the released code: end_layer=-3 for both methods, blocks 0..20 of a 24-block ViT-L
    for method in ("copy", "distill"):
        assert default_layers(24, method) == list(range(21))
        assert default_layers(6, method) == [0, 1, 2]
        assert default_layers(2, method) == [0]  # at least one block
    # the paper's text: copy every block, distill all but the last quarter
    assert default_layers(24, "copy", "paper") == list(range(24))
    assert default_layers(24, "distill", "paper") == list(range(18))
    assert default_layers(6, "distill", "paper") == [0, 1, 2, 3]
    assert default_layers(1, "distill", "paper") == [0]
    with pytest.raises(ValueError, match="rule must be one of"):
        default_layers(6, "copy", "everything")


def test_resolve_layers():
    assert resolve_layers("early", 6, []) == [0, 1, 2]
    assert resolve_layers("late", 6, []) == [3, 4, 5]
    assert resolve_layers("all", 3, []) == [0, 1, 2]
    assert resolve_layers([-1, 0, 0], 4, []) == [0, 3]
    assert resolve_layers(None, 4, [1]) == [1]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([6], 6, [])
    with pytest.raises(ValueError, match="'early'"):
        resolve_layers("middle", 6, [])


# --- attention copy --------------------------------------------------------------------------


def _zero_queries_and_keys(model) -> None:
    with torch.no_grad():
        for attn in model.attention_layers():
            attn.qkv.weight[: 2 * attn.dim].normal_()
            attn.qkv.bias[: 2 * attn.dim].normal_()


def test_attention_copy_ignores_the_students_queries_and_keys():
    teacher, student = _vit().eval(), _vit().eval()
    method = AttentionCopy(student, teacher, attn_layers="all")
    x = _images()
    with torch.no_grad():
        before = method.predict(x)
        _zero_queries_and_keys(student)
        after = method.predict(x)
        alone = student(x)
    torch.testing.assert_close(after, before)
    assert not torch.allclose(alone, after)  # without the teacher's maps it computes otherwise
    assert all(a.probs_override is None for a in student.attention_layers())


def test_attention_copy_uses_the_teachers_probabilities():
    teacher, student = _vit().eval(), _vit().eval()
    method = AttentionCopy(student, teacher, attn_layers="all")
    x = _images()
    t_maps = attention_probs(teacher, x)
    s_maps = attention_probs(student, x, predict=method.predict)
    for i in t_maps:
        torch.testing.assert_close(s_maps[i], t_maps[i])
    with torch.no_grad():
        before = method.predict(x)
        _zero_queries_and_keys(teacher)  # other teacher attention: other output
        assert not torch.allclose(method.predict(x), before)


def test_attention_copy_of_some_layers_only():
    teacher, student = _vit(depth=4).eval(), _vit(depth=4).eval()
    method = AttentionCopy(student, teacher, attn_layers="early")
    assert method.attn_layers == [0, 1]
    x = _images()
    t_maps = attention_probs(teacher, x)
    s_maps = attention_probs(student, x, predict=method.predict)
    torch.testing.assert_close(s_maps[1], t_maps[1])
    assert not torch.allclose(s_maps[3], t_maps[3])


def test_attention_copy_gives_queries_and_keys_no_gradient():
    teacher, student = _vit(), _vit()
    method = AttentionCopy(student, teacher, attn_layers="all")
    method.train()
    out = method(_images(4), torch.tensor([0, 1, 2, 3]))
    out.total.backward()
    for attn in student.attention_layers():
        grad = attn.qkv.weight.grad
        assert torch.count_nonzero(grad[: 2 * attn.dim]) == 0
        assert torch.count_nonzero(grad[2 * attn.dim :]) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_evaluation_runs_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    teacher, student = _vit().eval(), _vit()
    method = AttentionCopy(student, teacher)
    calls = []
    # the teacher runs as far as the copied blocks need: its first block runs once per batch
    handle = teacher.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    test = load_dataset("shapes", "test", size=64)
    loader = DeviceLoader(test, 32, train=False, device=torch.device("cpu"))
    evaluate(method.predict, loader)
    handle.remove()
    assert len(calls) == 2  # one teacher forward per batch


# --- attention distillation ------------------------------------------------------------------


def test_distillation_materializes_only_the_distilled_layers():
    teacher, student = _vit(depth=4), _vit(depth=4)
    method = AttentionDistillation(student, teacher, attn_layers=[1, 2])
    seen: dict[str, list[bool]] = {"student": [], "teacher": []}
    for role, net in (("student", student), ("teacher", teacher)):
        for attn in net.attention_layers():
            attn.register_forward_pre_hook(lambda m, a, r=role: seen[r].append(m.explicit))
    out = method(_images(), torch.tensor([0, 1]))
    assert seen["student"] == [False, True, True, False]
    assert seen["teacher"] == [False, True, True]  # it stops after the last distilled block
    assert set(out.loss_terms) == {"ce", "attn"} and set(out.diagnostics) == {"attn/1", "attn/2"}
    assert out.weights["attn"] == 3.0
    summed = out.diagnostics["attn/1"] + out.diagnostics["attn/2"]
    torch.testing.assert_close(out.loss_terms["attn"].detach(), summed)
    # no tap is left behind: the next forward is fused everywhere
    assert not any(a.explicit for a in student.attention_layers())


def test_distillation_loss_matches_the_function():
    teacher, student = _vit(), _vit()
    method = AttentionDistillation(student, teacher, attn_layers=[0])
    x = _images()
    out = method(x, torch.tensor([0, 1]))
    s_logits = _logits(student, x, 0)
    t_logits = _logits(teacher, x, 0)
    expected = attention_distillation_loss(s_logits, t_logits)
    torch.testing.assert_close(out.loss_terms["attn"], expected)


def _logits(model, x, layer):
    from atcourse.models import forward_with_taps

    _, taps = forward_with_taps(model, x, [f"blocks.{layer}.attn.logits"])
    return taps[f"blocks.{layer}.attn.logits"]


def test_distillation_trains_the_student_only():
    teacher, student = _vit(), _vit()
    method = AttentionDistillation(student, teacher)
    method.train()
    method(_images(4), torch.tensor([0, 1, 2, 3])).total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    q_rows = student.attention_layers()[0].qkv.weight.grad[: student.dim]
    assert torch.count_nonzero(q_rows) > 0
    assert not teacher.training


def test_a_matching_student_has_zero_distillation_loss():
    teacher = _vit()
    student = _vit()
    student.load_state_dict(teacher.state_dict())
    out = AttentionDistillation(student, teacher, attn_layers="all")(
        _images(), torch.tensor([0, 1])
    )
    assert out.loss_terms["attn"].abs().item() < 1e-6


def test_methods_reject_other_models():
    with pytest.raises(TypeError, match="ViT"):
        AttentionCopy(build("wrn_10_1"), build("wrn_10_1"))
    with pytest.raises(ValueError, match="depth"):
        AttentionDistillation(_vit(depth=2), _vit(depth=3))
    with pytest.raises(ValueError, match="heads"):
        AttentionCopy(build("vit_tiny", depth=2, dim=32, heads=4), _vit(depth=2))
    with pytest.raises(ValueError, match="attn_weight"):
        AttentionDistillation(_vit(), _vit(), attn_weight=-1.0)


# --- fine-tuning -----------------------------------------------------------------------------


def test_finetune_starts_from_the_teacher_but_the_head():
    teacher = _vit(num_classes=5)
    student = _vit(num_classes=5)
    head_before = student.head.weight.clone()
    method = FineTune(student, teacher)
    for (name, s), t in zip(student.state_dict().items(), teacher.state_dict().values()):
        if name.startswith("head."):
            continue
        assert torch.equal(s, t), name
    assert torch.equal(student.head.weight, head_before)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert "teacher.head.weight" not in method.trainable_state()
    with pytest.raises(ValueError, match="architecture"):
        FineTune(build("vit_tiny", depth=2, dim=64), _vit(depth=2))


# --- registry, config, training --------------------------------------------------------------


def test_registered_and_configurable():
    for name in ("attn_copy", "attn_distill", "finetune"):
        assert name in distill.METHODS
    cfg = config.configure("smoke", verbose=False, attn_weight=1.5, attn_layers=(0, 1))
    assert hparams_from_config("attn_distill", cfg) == {"attn_weight": 1.5, "attn_layers": (0, 1)}
    assert hparams_from_config("attn_copy", cfg) == {"attn_layers": (0, 1)}
    method = build_method(
        "attn_distill", _vit(), _vit(), **hparams_from_config("attn_distill", cfg)
    )
    assert method.hparams() == {"attn_weight": 1.5, "attn_layers": [0, 1]}
    with pytest.raises(ValueError, match="needs a teacher"):
        build_method("attn_copy", _vit())


@pytest.mark.parametrize("name", ["attn_copy", "attn_distill"])
def test_fit_runs_and_evaluates_through_predict(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    cfg = config.configure(
        "smoke", verbose=False, device="cpu", train_size=64, test_size=32, batch_size=32
    )
    train = load_dataset("shapes", "train", size=64)
    test = load_dataset("shapes", "test", size=32)
    method = build_method(name, _vit(), _vit().eval())
    result = fit(method, cfg, train, test, name=name, progress=False)
    row = result.history[-1]
    assert "loss_ce" in row and math.isfinite(row["test_acc"])
    if name == "attn_distill":
        assert row["loss_attn"] > 0
    loader = DeviceLoader(test, 32, train=False, device=torch.device("cpu"))
    assert evaluate(result.method.predict, loader)["acc"] == pytest.approx(row["test_acc"])


# --- reading attention -----------------------------------------------------------------------


def test_cls_attention_is_the_cls_row_as_a_grid():
    probs = torch.softmax(torch.randn(2, 3, 17, 17), -1)
    grid = cls_attention(probs)
    assert grid.shape == (2, 3, 4, 4)
    torch.testing.assert_close(grid.flatten(-2), probs[:, :, 0, 1:])
    with pytest.raises(ValueError, match="square grid"):
        cls_attention(torch.softmax(torch.randn(1, 1, 11, 11), -1))


def test_rollout_by_hand():
    a1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    a2 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    eye = torch.eye(2)
    r1, r2 = 0.5 * a1 + 0.5 * eye, 0.5 * a2 + 0.5 * eye  # rows already sum to 1
    expected = r2 @ r1
    got = attention_rollout([a1.expand(1, 1, 2, 2), a2.expand(1, 1, 2, 2)])
    torch.testing.assert_close(got[0], expected)
    # heads are averaged first
    two_heads = torch.stack([a1, a2])[None]  # (1, 2, 2, 2)
    torch.testing.assert_close(attention_rollout([two_heads], residual=0.0)[0], (a1 + a2) / 2)
    torch.testing.assert_close(got.sum(-1), torch.ones(1, 2))


def test_agreement_is_perfect_for_a_copy_student_and_a_clone():
    teacher = _vit().eval()
    x = _images(4)
    copy = AttentionCopy(_vit(), teacher, attn_layers="all")
    agree = attention_agreement(copy.student, teacher, x, predict=copy.predict, batch_size=3)
    assert agree["layers"] == [0, 1, 2]
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in agree["overlap"])
    assert all(abs(v) < 1e-5 for v in agree["kl"])
    other = attention_agreement(_vit(), teacher, x)
    assert all(v < 1.0 for v in other["overlap"]) and all(v > 0 for v in other["kl"])


def test_materialization_cost_counts_the_maps():
    model = _vit()
    x = _images(8)
    cost = materialization_cost(model, x, repeats=1)
    assert set(cost) == {"fused", "explicit"}
    n, heads, depth = model.num_tokens, model.heads, len(model.blocks)
    # the explicit path keeps at least one (B, heads, N, N) float32 map per layer
    maps = depth * 8 * heads * n * n * 4
    assert cost["explicit"]["saved_mib"] * 2**20 >= maps
    assert cost["explicit"]["saved_mib"] > cost["fused"]["saved_mib"] + 0.5 * maps / 2**20
    assert not any(a.materialize for a in model.attention_layers())
    assert all(p.grad is None for p in model.parameters())


def test_finite_differences_of_the_loss():
    s = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 1, 3, 3, dtype=torch.float64)

    def fn(x):
        return (t.softmax(-1) * (t.log_softmax(-1) - F.log_softmax(x, -1))).sum(-1).mean()

    assert torch.autograd.gradcheck(fn, (s,))
    (grad,) = torch.autograd.grad(attention_distillation_loss(s, t), s)
    # d KL / d logits = (q - p) / (number of rows)
    expected = (s.softmax(-1) - t.softmax(-1)) / 3
    torch.testing.assert_close(grad.double(), expected.detach())
