"""Run records and the leaderboard's aggregation."""

import json
import statistics

import pytest

from atcourse import results


def _record(method, seed, acc, student="wrn_16_1", complete=True):
    return {
        "method": method,
        "student": student,
        "teacher": "wrn_16_2",
        "complete": complete,
        "params": {"dataset": "shapes", "profile": "lab", "seed": seed},
        "final": {"test_acc": acc, "epoch_time_s": 2.0},
    }


def test_leaderboard_mean_and_std_over_seeds():
    recs = [
        _record("kd", 0, 0.80),
        _record("kd", 1, 0.84),
        _record("kd", 2, 0.85),
        _record("baseline", 0, 0.70),
    ]
    rows = {r["method"]: r for r in results.leaderboard(recs)}
    assert rows["kd"]["n"] == 3 and rows["kd"]["seeds"] == [0, 1, 2]
    assert rows["kd"]["mean"] == pytest.approx((0.80 + 0.84 + 0.85) / 3)
    assert rows["kd"]["std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.85]))
    assert rows["baseline"]["std"] == 0.0
    table = results.to_markdown(results.leaderboard(recs))
    assert "| kd | shapes | wrn_16_2 | wrn_16_1 | lab | 3 | 83.00 ± 2.65 |" in table


def test_load_records_skips_incomplete(tmp_path):
    for i, complete in enumerate([True, False]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "record.json").write_text(json.dumps(_record("kd", i, 0.5, complete=complete)))
    assert len(results.load_records(tmp_path)) == 1
    assert len(results.load_records(tmp_path, complete_only=False)) == 2


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
    final = results.final_metrics(hist)
    assert final["test_acc"] == 0.6 and final["best_test_acc"] == 0.6
    assert final["train_time_s"] == 6.0 and final["epoch_time_s"] == 3.0
