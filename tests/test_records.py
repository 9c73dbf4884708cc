"""Run records: the naming rule, reading and writing, the final metrics."""

import json

import pytest

from atcourse import records


def _record(
    method,
    seed,
    acc,
    *,
    label=None,
    student="wrn_16_1",
    teacher="wrn_16_2",
    hparams=None,
    complete=True,
    updated="2026-01-01T00:00:00+00:00",
    profile="lab",
    **final,
):
    label = label or method
    return {
        "name": records.run_name(label, student, "shapes", profile, seed),
        "label": label,
        "task": "shapes",
        "method": method,
        "student": student,
        "teacher": teacher,
        "hparams": hparams or {},
        "complete": complete,
        "updated": updated,
        "params": {"dataset": "shapes", "profile": profile, "seed": seed, "epochs": 12},
        "final": {"test_acc": acc, "epoch_time_s": 2.0, **final},
    }


def test_load_records_skips_incomplete(tmp_path):
    for i, complete in enumerate([True, False]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "record.json").write_text(json.dumps(_record("kd", i, 0.5, complete=complete)))
    assert len(records.load_records(tmp_path)) == 1
    assert len(records.load_records(tmp_path, complete_only=False)) == 2


def test_record_metrics_adds_to_final(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "record.json").write_text(json.dumps(_record("kd", 0, 0.5)))
    records.record_metrics(d, alignment=0.25)
    assert json.loads((d / "record.json").read_text())["final"]["alignment"] == 0.25
    with pytest.raises(FileNotFoundError, match="no readable run record"):
        records.record_metrics(tmp_path / "missing", alignment=0.1)


def test_final_metrics():
    hist = [
        {
            "epoch": 1,
            "test_acc": 0.5,
            "train_acc": 0.4,
            "train_time_s": 2.0,
            "wall_time_s": 2.5,
            "images_per_s": 100.0,
        },
        {
            "epoch": 2,
            "test_acc": 0.6,
            "train_acc": 0.55,
            "train_time_s": 4.0,
            "wall_time_s": 4.5,
            "images_per_s": 50.0,
        },
    ]
    final = records.final_metrics(hist)
    assert final["test_acc"] == 0.6 and final["best_test_acc"] == 0.6
    assert final["train_time_s"] == 6.0 and final["epoch_time_s"] == 3.0


def test_run_name_is_the_one_naming_rule_and_safe_for_folders(tmp_path):
    name = records.run_name("at+kd", "wrn_16_1", "folder:/data/x", "lab", 2)
    assert name == "at+kd-wrn_16_1-folder__data_x-lab-s2"
    assert records.run_name("attn_copy", "vitc_micro", "shapes[5,6]", "lab", 0) == (
        "attn_copy-vitc_micro-shapes[5,6]-lab-s0"
    )
    assert records.run_dir("a/b c").name == "a_b_c"


def test_a_record_stores_its_label_and_task_and_a_broken_one_is_reported(tmp_path):
    from atcourse import config, models
    from atcourse.data import load_dataset
    from atcourse.distill import build_method
    from atcourse.train import fit

    cfg = config.configure("smoke", verbose=False, device="cpu", train_size=64, test_size=32,
                           batch_size=8)  # fmt: skip
    train_set = load_dataset("shapes", "train", size=64).select_classes([0, 1])
    test_set = load_dataset("shapes", "test", size=32).select_classes([0, 1])
    method = build_method("gradient_at_flip", models.build("wrn_10_1", num_classes=2, seed=0))
    result = fit(method, cfg, train_set, test_set, progress=False)
    saved = records.read_record(result.run_dir)
    assert saved["label"] == "gradient_at_flip" and saved["task"] == "shapes[0,1]"
    assert result.run_dir.name == "gradient_at_flip-wrn_10_1-shapes[0,1]-smoke-s0"
    (result.run_dir / "record.json").write_text(json.dumps(saved)[:40])  # truncated
    with pytest.warns(UserWarning, match="record.json cannot be read"):
        assert records.load_records() == []
