"""Run records, the compared entries, the leaderboard's aggregation, anchors and the page."""

import csv
import io
import json
import statistics

import pytest

from atcourse import config, distill, models, results


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
        "name": results.run_name(label, student, "shapes", profile, seed),
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
    rows = {r["label"]: r for r in results.leaderboard(recs)}
    kd = rows["kd"]
    assert kd["n"] == 3 and kd["seeds"] == [0, 1, 2]
    # by hand: mean 2.49 / 3 = 0.83; sample variance (0.03^2 + 0.01^2 + 0.02^2) / 2 = 7e-4
    assert kd["mean"] == pytest.approx(0.83)
    assert kd["std"] == pytest.approx(0.0007**0.5)
    assert kd["std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.85]))
    assert rows["baseline"]["std"] == 0.0 and rows["baseline"]["n"] == 1
    assert [r["label"] for r in results.leaderboard(recs)] == ["kd", "baseline"]  # best first
    table = results.to_markdown(results.leaderboard(recs))
    assert "| kd | kd | wrn_16_2 → wrn_16_1 | shapes | lab | 3 | 83.00 ± 2.65 | 2.0 | - |" in table


def test_variants_of_one_method_are_separate_rows():
    recs = [
        _record("gradient_at", 0, 0.8, hparams={"mode": "teacher"}),
        _record("gradient_at", 1, 0.9, hparams={"mode": "teacher"}),
        _record("gradient_at", 0, 0.6, label="gradient_at_flip", teacher=None,
                hparams={"mode": "flip"}),
        # the same label at two values of beta (e.g. a grid in runs/variants/)
        _record("at", 0, 0.7, hparams={"beta": 1000.0}),
        _record("at", 0, 0.5, hparams={"beta": 100.0}),
    ]  # fmt: skip
    rows = {r["label"]: r for r in results.leaderboard(recs)}
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
    rows = results.leaderboard(recs)
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
    rows = {r["label"]: r for r in results.leaderboard(recs)}
    assert rows["at"]["alignment"] == pytest.approx(0.55)
    assert rows["at"]["alignment_std"] == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert rows["at"]["alignment_n"] == 2
    assert rows["kd"]["alignment"] is None
    assert "| 55.0 ± 7.1 |" in results.to_markdown([rows["at"]])


def test_csv_export_round_trips():
    rows = results.leaderboard([_record("kd", 0, 0.8), _record("kd", 1, 0.9, alignment=0.4)])
    parsed = list(csv.DictReader(io.StringIO(results.to_csv(rows))))
    assert len(parsed) == 1
    assert parsed[0]["label"] == "kd" and parsed[0]["seeds"] == "0;1"
    assert float(parsed[0]["mean"]) == pytest.approx(0.85)
    assert float(parsed[0]["alignment"]) == pytest.approx(0.4)
    assert json.loads(parsed[0]["hparams"]) == {}


def test_load_records_skips_incomplete(tmp_path):
    for i, complete in enumerate([True, False]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "record.json").write_text(json.dumps(_record("kd", i, 0.5, complete=complete)))
    assert len(results.load_records(tmp_path)) == 1
    assert len(results.load_records(tmp_path, complete_only=False)) == 2


def test_record_metrics_adds_to_final(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "record.json").write_text(json.dumps(_record("kd", 0, 0.5)))
    results.record_metrics(d, alignment=0.25)
    assert json.loads((d / "record.json").read_text())["final"]["alignment"] == 0.25
    with pytest.raises(FileNotFoundError, match="no readable run record"):
        results.record_metrics(tmp_path / "missing", alignment=0.1)


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


# --------------------------------------------------------------------------- naming, entries


def test_run_name_and_label_round_trip():
    name = results.run_name("at+kd", "wrn_16_1", "folder:/data/x", "lab", 2)
    assert name == "at+kd-wrn_16_1-folder__data_x-lab-s2"
    rec = {"name": name, "student": "wrn_16_1",
           "params": {"dataset": "folder:/data/x", "profile": "lab", "seed": 2}}  # fmt: skip
    assert results.run_label(rec) == "at+kd"
    zoo = {"name": "teacher-wrn_16_2-shapes-lab-s0-0d20613116", "student": "wrn_16_2",
           "params": {"dataset": "shapes", "profile": "lab", "seed": 0}}  # fmt: skip
    assert results.run_label(zoo) == "teacher"
    assert results.run_label({"name": "my-run-s3"}) == "my-run"
    vit = {"name": "attn_copy-vitc_micro-shapes_c56789-lab-s0", "student": "vitc_micro",
           "params": {"dataset": "shapes", "profile": "lab", "seed": 0}}  # fmt: skip
    assert results.run_label(vit) == "attn_copy"


def test_runs_on_a_class_subset_are_another_task_and_another_row():
    def rec(data, acc):
        return {"name": "baseline-wrn_16_1-shapes-lab-s0", "method": "baseline",
                "student": "wrn_16_1", "data": data, "final": {"test_acc": acc},
                "params": {"dataset": "shapes", "profile": "lab", "seed": 0}}  # fmt: skip

    full, part = rec("shapes", 0.5), rec("shapes[5,6,7,8,9]", 0.8)
    assert results.task(full) == "shapes" and results.task(part) == "shapes[5,6,7,8,9]"
    assert results.task({"params": {"dataset": "cifar10"}}) == "cifar10"  # older records
    rows = results.leaderboard([full, part])
    assert sorted((r["dataset"], r["mean"]) for r in rows) == [
        ("shapes", 0.5),
        ("shapes[5,6,7,8,9]", 0.8),
    ]


def test_entries_have_unique_labels_and_registered_methods_build():
    labels = [e.label for e in results.ENTRIES]
    assert len(labels) == len(set(labels))
    student, teacher = models.build("wrn_10_1"), models.build("wrn_10_1")
    for entry in results.available_entries(verbose=False):
        method = distill.build_method(
            entry.method, student, teacher if entry.teacher else None, **entry.hparams
        )
        assert method.name == entry.method


def test_entries_match_what_the_notebooks_train():
    # A notebook's finished run is reused only if the hyperparameters are the same: the
    # entries must build what notebooks 01 to 03 build with their default parameters.
    s, t = models.build("wrn_10_1"), models.build("wrn_10_1")
    taught = {
        "kd": distill.KD(s, t, alpha=0.9, T=4.0),
        "at": distill.AT(s, t, beta=None, p=2.0, mode="code"),
        "at+kd": distill.ATKD(s, t, alpha=0.9, T=4.0, beta=None, p=2.0, mode="code"),
        "gradient_at": distill.GradientAT(s, t, beta=None),
        "gradient_at_flip": distill.GradientAT(s, mode="flip", beta=None),
    }
    entries = {e.label: e for e in results.ENTRIES}
    for label, method in taught.items():
        e = entries[label]
        built = distill.build_method(e.method, s, t if e.teacher else None, **e.hparams)
        assert built.hparams() == method.hparams(), label


def test_unregistered_entries_are_skipped_with_a_note(capsys):
    future = results.Entry("cat_kd", "method_from_a_later_notebook", {"beta": 1.0}, notebook="04")
    kept = results.available_entries([results.ENTRIES[2], future])
    assert [e.label for e in kept] == [results.ENTRIES[2].label]
    out = capsys.readouterr().out
    assert "skipping 'cat_kd'" in out and "notebook 04" in out


@pytest.fixture
def tiny_roots(isolated_roots):
    return isolated_roots


def test_train_entry_trains_once_then_reuses(tiny_roots, capsys):
    cfg = config.configure(
        "smoke", verbose=False, device="cpu", train_size=64, test_size=32, batch_size=32,
        teacher_epochs=1,
    )  # fmt: skip
    entry = results.Entry("kd", "kd", {"alpha": 0.9, "T": 4.0}, teacher="wrn_10_1",
                          student="wrn_10_1")  # fmt: skip
    assert results.train_entry(entry, cfg, train=False) is None  # nothing yet, nothing trained
    assert "no finished run" in capsys.readouterr().out
    first = results.train_entry(entry, cfg, progress=False)
    assert first.trained and first.name == "kd-wrn_10_1-shapes-smoke-s0"
    assert 0.0 <= first.final["alignment"] <= 1.0 and first.final["alignment_layer"] == "group2"
    again = results.train_entry(entry, cfg, progress=False)
    assert not again.trained and again.final["test_acc"] == first.final["test_acc"]
    read = results.train_entry(entry, cfg, train=False)
    assert read.record["hparams"]["T"] == 4.0 and read.model is None
    other = results.Entry("kd", "kd", {"T": 2.0}, teacher="wrn_10_1", student="wrn_10_1")
    assert results.train_entry(other, cfg, train=False) is None  # a different setting
    rows = results.leaderboard(results.load_records())
    assert {r["label"] for r in rows} == {"kd", "teacher"}  # the zoo's teacher has a record


# --------------------------------------------------------------------------- anchors, page


def test_anchors_carry_sources_and_the_at_table():
    assert all(a.source and a.metric in ("error", "top1") for a in results.ANCHORS)
    at = {a.method: a for a in results.anchors(dataset="cifar10", student="wrn_16_1")
          if a.teacher == "wrn_16_2"}  # fmt: skip
    assert (
        at["at"].value == 7.93 and at["at"].verified and at["at"].accuracy == pytest.approx(92.07)
    )
    assert not at["kd"].verified  # quoted, not checked: flagged
    md = results.anchors_markdown(results.anchors(dataset="cifar10"))
    assert "| wrn_16_2 → wrn_16_1 | 8.77 | 7.93 | 8.51† | 7.41† | 7.51† | 6.31 |" in md
    assert "verify before citing" in md
    lines = results.anchors_csv().strip().splitlines()
    assert len(lines) == len(results.ANCHORS) + 1


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
    report = results.update_page(page, recs)
    assert [updated for _, updated in report] == [True, False, True]
    text = page.read_text()
    assert "(old)" not in text and "85.00 ± 7.07" in text
    assert "`atcourse run 07_leaderboard --profile lab --seeds 0,1`" in text
    assert "Test CPU, 2 cores; 2 threads" in text
    assert "No run yet." in text and "intro" in text and "middle" in text
    assert text.rstrip().endswith("end") and "| 8.77 |" in text
    again = page.read_text()
    results.update_page(page, recs)
    assert page.read_text() == again  # regenerating is stable
    page.write_text("<!-- atcourse:leaderboard profile=lab dataset=shapes -->\n")
    with pytest.raises(ValueError, match="has no"):
        results.update_page(page, recs)


def test_measure_alignment_reads_cnns_and_vits(tiny_roots):
    from atcourse.data import load_dataset

    test_set = load_dataset("shapes", "test", size=16)
    for arch, layer in (("wrn_10_1", "group2"), ("vit_tiny", "blocks.")):
        score, where = results.measure_alignment(models.build(arch), test_set, batch_size=8)
        assert 0.0 < score < 1.0 and where.startswith(layer), (arch, where)
    no_masks = load_dataset("shapes", "test", size=16)
    no_masks.masks = None
    assert results.measure_alignment(models.build("wrn_10_1"), no_masks) is None
