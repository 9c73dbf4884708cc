"""The teacher zoo: trains once, then loads; the cache key follows the recipe; one trainer."""

import json
import multiprocessing as mp

import torch

from atcourse import config, zoo


def _cfg(**over):
    return config.configure(
        "smoke",
        verbose=False,
        device="cpu",
        train_size=128,
        test_size=64,
        teacher_epochs=1,
        teacher_profile="smoke",
        batch_size=64,
        **over,
    )


def test_trains_once_then_loads_identical_weights():
    cfg = _cfg()
    first = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    assert first.zoo_info["cached"] is False
    assert not first.training and all(not p.requires_grad for p in first.parameters())
    assert "test_acc" in first.zoo_info["final"]
    second = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    assert second.zoo_info["cached"] is True
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_covers_the_recipe():
    cfg = _cfg()
    base = zoo.checkpoint_path("wrn_10_1", cfg)
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(lr=0.01)) != base
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(seed=1)) != base
    assert zoo.checkpoint_path("wrn_16_1", cfg) != base
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(train_size=100)) != base
    # where it runs does not change what it learns: same file
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(device="auto")) == base


def _ask_for_teacher(root, runs, queue):
    import os

    os.environ["ATCOURSE_DATA"], os.environ["ATCOURSE_RUNS"] = root, runs
    t = zoo.teacher("wrn_10_1", cfg=_cfg(), progress=False)
    queue.put(t.zoo_info["cached"])


def test_two_processes_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (str(tmp_path / "data"), str(tmp_path / "runs"), queue)
    procs = [ctx.Process(target=_ask_for_teacher, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    assert sorted([queue.get(timeout=5), queue.get(timeout=5)]) == [False, True]


def test_initial_weights_follow_the_seed_whatever_ran_before(tmp_path, monkeypatch):
    cfg = _cfg()
    torch.manual_seed(123)  # unrelated randomness before the call must not matter
    a = zoo.teacher("wrn_10_1", cfg=cfg, progress=False, retrain=True)
    torch.manual_seed(456)
    b = zoo.teacher("wrn_10_1", cfg=cfg, progress=False, retrain=True)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_a_class_subset_is_its_own_checkpoint():
    cfg = _cfg()
    base = zoo.checkpoint_path("wrn_10_1", cfg)
    half = zoo.checkpoint_path("wrn_10_1", cfg, classes=(0, 1, 2, 3, 4))
    assert half != base and "-c0_1_2_3_4-" in half.name
    assert zoo.checkpoint_path("wrn_10_1", cfg, classes=(5, 6, 7, 8, 9)) != half
    # an AdamW recipe is another checkpoint; SGD spelled out is the same as the default
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(optimizer="adamw")) != base
    assert zoo.checkpoint_path("wrn_10_1", cfg.replace(optimizer="sgd")) == base
    small = cfg.replace(batch_size=16)  # two classes of 128 images: about 26 images
    t = zoo.teacher("wrn_10_1", cfg=small, classes=(3, 4), progress=False)
    assert t.fc.out_features == 2 and t.zoo_info["classes"] == [3, 4]
    again = zoo.teacher("wrn_10_1", cfg=small, classes=(3, 4), progress=False)
    assert again.zoo_info["cached"] is True


def test_a_shipped_teacher_is_loaded_on_an_empty_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "shipped")
    cfg = _cfg()
    trained = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    target = zoo.ship(trained, "atcourse teacher --arch wrn_10_1 --profile smoke")
    sidecar = json.loads(target.with_suffix(".json").read_text())
    assert sidecar["final"] == trained.zoo_info["final"] and sidecar["command"].startswith("atc")
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "fresh"))  # a fresh clone: no cache
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "fresh-runs"))
    loaded = zoo.teacher("wrn_10_1", cfg=cfg, progress=False)
    assert loaded.zoo_info["shipped"] and loaded.zoo_info["cached"]
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").rglob("*.pt"))
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
