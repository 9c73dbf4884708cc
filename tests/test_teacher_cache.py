"""The teacher's outputs kept for the next student: identical results, bounded, never stale."""

from __future__ import annotations

import pytest
import torch

from atcourse import config, models
from atcourse.data import load_dataset
from atcourse.distill import build_method
from atcourse.distill.teacher_cache import TeacherCache
from atcourse.train import TEACHER_CACHE, fit


def test_the_cache_keeps_outputs_by_setting_and_batch_within_its_budget():
    cache = TeacherCache(max_bytes=64 * 4)  # room for 64 floats
    cache.start("a")
    cache.at(0, 0)
    assert cache.get(["logits"]) is None  # nothing yet
    assert cache.put({"logits": torch.ones(4, 8)})  # 32 floats
    assert torch.equal(cache.get(["logits"])["logits"], torch.ones(4, 8))
    cache.at(0, 1)
    assert cache.get(["logits"]) is None  # another batch
    assert cache.put({"logits": torch.zeros(4, 8)})
    cache.at(0, 2)
    assert not cache.put({"logits": torch.zeros(4, 8)})  # full with the current setting
    cache.start("b")  # a new setting may push out the old one, never the current one
    cache.at(0, 0)
    assert cache.get(["logits"]) is None and cache.put({"logits": torch.zeros(4, 8)})
    cache.start("a")
    cache.at(0, 0)
    assert cache.get(["logits"]) is None  # "a" was dropped to make room for "b"
    cache.stop()
    assert cache.get(["logits"]) is None and not cache.put({"x": torch.zeros(1)})


def _setting(**over):
    values = {"device": "cpu", "train_size": 128, "test_size": 64, "batch_size": 32, "epochs": 2}
    cfg = config.configure("smoke", verbose=False, **{**values, **over})
    data = load_dataset("shapes", "train", size=128), load_dataset("shapes", "test", size=64)
    return cfg, data


def _run(name, cfg, data, teacher, tmp_path):
    student = models.build("wrn_10_1", seed=cfg.seed)
    method = build_method(name, student, teacher)
    return fit(method, cfg, *data, run_dir=tmp_path / f"{name}-{cfg.teacher_cache_mb}",
               progress=False)  # fmt: skip


@pytest.mark.parametrize("name", ["kd", "at", "gradient_at", "cat_kd", "aft"])
def test_a_student_served_from_the_cache_trains_exactly_as_with_the_teacher(name, tmp_path):
    TEACHER_CACHE.clear()
    cfg, data = _setting()
    teacher = models.build("wrn_10_1", seed=7)
    first = _run(name, cfg, data, teacher, tmp_path / "first")
    assert all(row["teacher_cached"] == 0.0 for row in first.history)
    served = _run(name, cfg, data, teacher, tmp_path / "served")
    assert all(row["teacher_cached"] == 1.0 for row in served.history)
    plain = _run(name, cfg.replace(teacher_cache_mb=0), data, teacher, tmp_path / "plain")
    assert "teacher_cached" not in plain.history[0]
    for a, b in zip(served.history, plain.history):
        for key in (k for k in a if k.startswith(("loss_", "diag_"))):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    weights = [served.method.student.state_dict(), plain.method.student.state_dict()]
    for key, a in weights[0].items():
        torch.testing.assert_close(a, weights[1][key], rtol=1e-4, atol=1e-6)


def test_a_changed_teacher_or_seed_is_never_served_stale_outputs(tmp_path):
    TEACHER_CACHE.clear()
    cfg, data = _setting(epochs=1)
    teacher = models.build("wrn_10_1", seed=7)
    _run("kd", cfg, data, teacher, tmp_path / "a")
    with torch.no_grad():
        teacher.fc.weight.add_(0.01)  # another teacher
    assert _run("kd", cfg, data, teacher, tmp_path / "b").history[0]["teacher_cached"] == 0.0
    other_seed = _run("kd", cfg.replace(seed=1), data, teacher, tmp_path / "c")
    assert other_seed.history[0]["teacher_cached"] == 0.0


def test_methods_share_what_they_have_in_common(tmp_path):
    TEACHER_CACHE.clear()
    cfg, data = _setting(epochs=1)
    teacher = models.build("wrn_10_1", seed=7)
    _run("at", cfg, data, teacher, tmp_path / "a")  # the teacher's maps, no logits
    both = _run("at+kd", cfg, data, teacher, tmp_path / "b")
    assert both.history[0]["teacher_cached"] == 0.0  # the logits were missing: computed
    again = _run("at", cfg, data, teacher, tmp_path / "c")
    assert again.history[0]["teacher_cached"] == 1.0
