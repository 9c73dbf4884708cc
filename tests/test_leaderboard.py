"""The leaderboard's aggregation over seeds, its exports, the anchors and the results page."""

import csv
import io
import json
import statistics

import pytest

from atcourse import anchors, leaderboard, records


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


def test_leaderboard_mean_and_std_over_seeds_by_hand():
    recs = [
        _record("kd", 0, 0.80),
        _record("kd", 1, 0.84),
        _record("kd", 2, 0.85),
        _record("baseline", 0, 0.70, teacher=None),
    ]
    rows = {r["label"]: r for r in leaderboard.leaderboard(recs)}
    kd = rows["kd"]
    assert kd["n"] == 3 and kd["seeds"] == [0, 1, 2]
    # by hand: mean 2.49 / 3 = 0.83; sample variance (0.03^2 + 0.01^2 + 0.02^2) / 2 = 7e-4
    assert kd["mean"] == pytest.approx(0.83)
    assert kd["std"] == pytest.approx(0.0007**0.5)
    assert kd["std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.85]))
    assert rows["baseline"]["std"] == 0.0 and rows["baseline"]["n"] == 1
    assert [r["label"] for r in leaderboard.leaderboard(recs)] == ["kd", "baseline"]  # best first
    table = leaderboard.to_markdown(leaderboard.leaderboard(recs))
    assert "| kd | kd | wrn_16_2 → wrn_16_1 | shapes | lab | 3 | 83.00 ± 2.65 | 2.0 | - |" in table


def test_variants_of_one_method_are_separate_rows():
    recs = [
        _record("gradient_at", 0, 0.8, hparams={"mode": "teacher"}),
        _record("gradient_at", 1, 0.9, hparams={"mode": "teacher"}),
        _record("gradient_at_flip", 0, 0.6, teacher=None, hparams={"mode": "flip"}),
        # the same label at two values of beta (e.g. a grid in runs/variants/)
        _record("at", 0, 0.7, hparams={"beta": 1000.0}),
        _record("at", 0, 0.5, hparams={"beta": 100.0}),
    ]  # fmt: skip
    rows = {r["label"]: r for r in leaderboard.leaderboard(recs)}
    assert set(rows) == {"gradient_at", "gradient_at_flip", "at (beta=1000)", "at (beta=100)"}
    assert rows["gradient_at"]["n"] == 2 and rows["gradient_at"]["mean"] == pytest.approx(0.85)
    assert rows["gradient_at_flip"]["n"] == 1 and rows["gradient_at_flip"]["teacher"] is None
    assert rows["at (beta=100)"]["mean"] == 0.5


def test_recipe_separates_rows_and_a_seed_counts_once():
    short = _record("kd", 0, 0.6)
    short["params"]["epochs"] = 3
    recs = [
        _record("kd", 0, 0.80, updated="2026-01-01T00:00:00+00:00"),
        _record("kd", 0, 0.82, updated="2026-02-01T00:00:00+00:00"),  # same run, rerun later
        _record("kd", 1, 0.84),
        short,
    ]
    rows = leaderboard.leaderboard(recs)
    assert len(rows) == 2
    full = next(r for r in rows if r["recipe"]["epochs"] == 12)
    assert full["n"] == 2 and full["mean"] == pytest.approx((0.82 + 0.84) / 2)
    assert {r["label"] for r in rows} == {"kd (epochs=12)", "kd (epochs=3)"}


def test_alignment_is_averaged_where_recorded():
    recs = [
        _record("at", 0, 0.8, alignment=0.50),
        _record("at", 1, 0.8, alignment=0.60),
        _record("at", 2, 0.8),  # measured nowhere: not counted
        _record("kd", 0, 0.8),
    ]
    rows = {r["label"]: r for r in leaderboard.leaderboard(recs)}
    assert rows["at"]["alignment"] == pytest.approx(0.55)
    assert rows["at"]["alignment_std"] == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert rows["at"]["alignment_n"] == 2
    assert rows["kd"]["alignment"] is None
    assert "| 55.0 ± 7.1 |" in leaderboard.to_markdown([rows["at"]])


def test_csv_export_round_trips():
    rows = leaderboard.leaderboard([_record("kd", 0, 0.8), _record("kd", 1, 0.9, alignment=0.4)])
    parsed = list(csv.DictReader(io.StringIO(leaderboard.to_csv(rows))))
    assert len(parsed) == 1
    assert parsed[0]["label"] == "kd" and parsed[0]["seeds"] == "0;1"
    assert float(parsed[0]["mean"]) == pytest.approx(0.85)
    assert float(parsed[0]["alignment"]) == pytest.approx(0.4)
    assert json.loads(parsed[0]["hparams"]) == {}


def test_runs_on_a_class_subset_are_another_task_and_another_row():
    def rec(task, acc):
        return {"name": "baseline-wrn_16_1-shapes-lab-s0", "method": "baseline",
                "label": "baseline", "student": "wrn_16_1", "task": task,
                "final": {"test_acc": acc},
                "params": {"dataset": "shapes", "profile": "lab", "seed": 0}}  # fmt: skip

    full, part = rec("shapes", 0.5), rec("shapes[5,6,7,8,9]", 0.8)
    rows = leaderboard.leaderboard([full, part])
    assert sorted((r["dataset"], r["mean"]) for r in rows) == [
        ("shapes", 0.5),
        ("shapes[5,6,7,8,9]", 0.8),
    ]


def test_anchors_carry_sources_and_the_at_table():
    assert all(a.source and a.metric in ("error", "top1") for a in anchors.ANCHORS)
    at = {a.method: a for a in anchors.anchors(dataset="cifar10", student="wrn_16_1")
          if a.teacher == "wrn_16_2"}  # fmt: skip
    assert (
        at["at"].value == 7.93 and at["at"].verified and at["at"].accuracy == pytest.approx(92.07)
    )
    assert not at["kd"].verified  # quoted, not checked: flagged
    md = anchors.anchors_markdown(anchors.anchors(dataset="cifar10"))
    assert "| wrn_16_2 → wrn_16_1 | 8.77 | 7.93 | 8.51† | 7.41† | 7.51† | 6.31 |" in md
    assert "verify before citing" in md
    lines = anchors.anchors_csv().strip().splitlines()
    assert len(lines) == len(anchors.ANCHORS) + 1


def test_update_page_fills_marked_sections_and_keeps_the_rest(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(
        "# Results\n\nintro\n\n"
        "<!-- atcourse:leaderboard profile=lab dataset=shapes -->\n(old)\n<!-- atcourse:end -->\n"
        "\nmiddle\n\n"
        "<!-- atcourse:leaderboard profile=full dataset=cifar10 -->\n"
        "No run yet.\n<!-- atcourse:end -->\n\n"
        "<!-- atcourse:anchors dataset=cifar10 -->\n<!-- atcourse:end -->\nend\n"
    )
    recs = [_record("kd", 0, 0.8), _record("kd", 1, 0.9)]
    recs[0].update(threads=2, torch="2.x", machine={"cpu": "Test CPU", "cores": 2})
    report = leaderboard.update_page(page, recs)
    assert [updated for _, updated in report] == [True, False, True]
    text = page.read_text()
    assert "(old)" not in text and "85.00 ± 7.07" in text
    assert "`atcourse run 07_leaderboard --profile lab --seeds 0,1`" in text
    assert "Test CPU, 2 cores; 2 threads" in text
    assert "No run yet." in text and "intro" in text and "middle" in text
    assert text.rstrip().endswith("end") and "| 8.77 |" in text
    again = page.read_text()
    leaderboard.update_page(page, recs)
    assert page.read_text() == again  # regenerating is stable
    page.write_text("<!-- atcourse:leaderboard profile=lab dataset=shapes -->\n")
    with pytest.raises(ValueError, match="has no"):
        leaderboard.update_page(page, recs)


def test_verdicts_against_the_student_alone_follow_the_two_standard_error_rule():
    recs = [
        *(_record("baseline", s, a, teacher=None) for s, a in enumerate([0.70, 0.72, 0.74])),
        *(_record("kd", s, a) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(_record("at", s, a) for s, a in enumerate([0.70, 0.76, 0.73])),
        *(_record("gradient_at", s, a) for s, a in enumerate([0.60, 0.61, 0.62])),
        _record("cat_kd", 0, 0.90),  # one seed: no spread
        _record("teacher", 0, 0.95, student="wrn_16_2", teacher=None),  # another student
    ]
    rows = leaderboard.leaderboard(recs)
    found = {c["label"]: c for c in leaderboard.compare_to_reference(rows)}
    assert set(found) == {"kd", "at", "gradient_at", "cat_kd"}  # not the reference, nor teacher
    kd = found["kd"]
    # by hand, paired by seed: differences 0.10, 0.09, 0.08; mean 0.09, std 0.01
    se = 0.01 / 3**0.5
    assert kd["gain"] == pytest.approx(0.09) and kd["se"] == pytest.approx(se)
    assert kd["teacher"] == "wrn_16_2" and (kd["n"], kd["n_reference"]) == (3, 3)
    assert kd["seeds"] == [0, 1, 2] and kd["n_paired"] == 3
    assert kd["threshold"] == pytest.approx(2 * se) and kd["verdict"] == "better"
    # at: differences 0.00, 0.04, -0.01: mean 0.01, std sqrt(0.0007), inside 2 standard errors
    assert found["at"]["gain"] == pytest.approx(0.01)
    assert found["at"]["se"] == pytest.approx((0.0007 / 3) ** 0.5)
    assert found["at"]["verdict"] == "within the noise"
    assert found["gradient_at"]["verdict"] == "worse"
    assert found["cat_kd"]["verdict"] == "cannot tell" and found["cat_kd"]["se"] is None
    # a stricter rule turns the same gain into noise: z scales the threshold
    strict = {c["label"]: c for c in leaderboard.compare_to_reference(rows, z=20.0)}
    assert strict["kd"]["verdict"] == "within the noise"
    with pytest.raises(ValueError, match="z must be positive"):
        leaderboard.compare_to_reference(rows, z=0.0)


def test_verdicts_pair_the_runs_by_seed():
    # wide spreads over seeds, but the method is ahead in every seed: the paired gain's
    # standard error is that of the differences (0.02, 0.03, 0.02), not of the two spreads
    recs = [
        *(_record("baseline", s, a, teacher=None) for s, a in enumerate([0.60, 0.70, 0.80])),
        *(_record("kd", s, a) for s, a in enumerate([0.62, 0.73, 0.82])),
        *(_record("at", s, a) for s, a in [(3, 0.9), (4, 0.9)]),  # seeds the baseline lacks
        *(_record("cat_kd", s, a) for s, a in [(1, 0.75), (2, 0.80), (5, 0.99)]),
    ]
    found = {c["label"]: c for c in leaderboard.compare_to_reference(leaderboard.leaderboard(recs))}
    kd = found["kd"]
    unpaired = ((0.1**2 + 0.1**2) / 3) ** 0.5  # the rows' own spreads would hide the gain
    assert kd["gain"] == pytest.approx(0.07 / 3) and kd["gain"] < 2 * unpaired
    assert kd["se"] == pytest.approx(statistics.stdev([0.02, 0.03, 0.02]) / 3**0.5)
    assert kd["verdict"] == "better"
    assert found["at"]["n_paired"] == 0 and found["at"]["verdict"] == "cannot tell"
    assert found["at"]["gain"] == pytest.approx(0.9 - 0.7)  # no shared seed: the means
    # only the shared seeds 1 and 2 count: differences 0.05 and 0.00
    cat = found["cat_kd"]
    assert cat["seeds"] == [1, 2] and cat["gain"] == pytest.approx(0.025)
    assert cat["verdict"] == "within the noise"


def test_verdicts_compare_only_rows_of_the_same_student_and_profile():
    recs = [
        _record("baseline", 0, 0.5, teacher=None), _record("baseline", 1, 0.5, teacher=None),
        _record("kd", 0, 0.9, profile="smoke"), _record("kd", 1, 0.9, profile="smoke"),
        _record("kd", 0, 0.9, student="wrn_16_2"), _record("kd", 1, 0.9, student="wrn_16_2"),
    ]  # fmt: skip
    assert leaderboard.compare_to_reference(leaderboard.leaderboard(recs)) == []


def test_paper_gain_takes_the_closest_published_pair():
    kd = leaderboard.paper_gain("kd", student="wrn_16_1", teacher="wrn_16_2")
    # the AT paper's CIFAR-10 row for this very pair: error 8.77 alone, 7.41 with KD
    assert kd["source"].startswith("Zagoruyko") and kd["teacher"] == "wrn_16_2"
    assert kd["gain"] == pytest.approx(8.77 - 7.41)
    assert kd["teacher_value"] == pytest.approx(100 - 6.31)
    at = leaderboard.paper_gain("at", student="wrn_16_1", teacher="wrn_40_1")
    assert at["teacher"] == "wrn_40_1" and at["gain"] == pytest.approx(8.77 - 8.25)
    # no CAT-KD number for a wrn_16_1 student: the closest WRN pair, beside RepDistiller's
    # student alone for that pair (the CAT-KD rows carry no student-alone number)
    cat = leaderboard.paper_gain("cat_kd", student="wrn_16_1", teacher="wrn_16_2")
    assert (cat["teacher"], cat["student"]) == ("wrn_40_2", "wrn_16_2")
    assert cat["gain"] == pytest.approx(75.60 - 73.26) and cat["teacher_value"] == 75.61
    resnet = leaderboard.paper_gain("cat_kd", student="resnet8x4", teacher="resnet32x4")
    assert resnet["gain"] == pytest.approx(76.91 - 72.50)
    assert leaderboard.paper_gain("aft", student="wrn_16_1", teacher="wrn_16_2") is None
    assert leaderboard.paper_gain("baseline", student="wrn_16_1") is None


def test_smoke_runs_are_announced_as_mechanics_only():
    lab = leaderboard.leaderboard([_record("kd", 0, 0.8)])
    smoke = leaderboard.leaderboard([_record("kd", 0, 0.1, profile="smoke")])
    assert leaderboard.smoke_notice(lab) is None
    notice = leaderboard.smoke_notice(lab + smoke)
    assert "smoke" in notice and "mechanics" in notice and leaderboard.LAB_COMMAND in notice


def test_the_end_of_a_sweep_says_so_above_a_smoke_table(tmp_path, monkeypatch, capsys):
    from atcourse import sweep

    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path))
    for profile in ("smoke", "lab"):
        rec = _record("kd", 0, 0.1, profile=profile)
        meta = {k: v for k, v in rec.items() if k not in ("final", "complete", "updated")}
        history = [{"epoch": 1, "test_acc": 0.1, "train_acc": 0.1, "train_time_s": 1.0,
                    "wall_time_s": 1.0, "images_per_s": 10.0}]  # fmt: skip
        records.write_record(records.run_dir(rec["name"]), meta, history, complete=True)
    sweep._print_leaderboard({"smoke"})
    out = capsys.readouterr().out
    assert out.index("smoke-profile runs") < out.index("| run |")
    assert leaderboard.LAB_COMMAND in out
    sweep._print_leaderboard({"lab"})
    assert "smoke-profile" not in capsys.readouterr().out
