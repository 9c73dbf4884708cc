"""The compared entries: what they build, training the missing ones, where networks look."""

import pytest

from atcourse import config, distill, experiments, leaderboard, models, records


def test_entries_have_unique_labels_and_registered_methods_build():
    labels = [e.label for e in experiments.ENTRIES]
    assert len(labels) == len(set(labels))
    student, teacher = models.build("wrn_10_1"), models.build("wrn_10_1")
    for entry in experiments.ENTRIES:
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
        "aft": distill.AFTKD(s, t),
    }
    entries = {e.label: e for e in experiments.ENTRIES}
    for label, method in taught.items():
        e = entries[label]
        built = distill.build_method(e.method, s, t if e.teacher else None, **e.hparams)
        assert built.hparams() == method.hparams(), label


def test_an_entry_of_an_unknown_method_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="unknown method 'distill_all'.*cat_kd"):
        experiments.Entry("x", "distill_all")


def test_train_entry_trains_once_then_reuses(capsys):
    cfg = config.configure(
        "smoke", verbose=False, device="cpu", train_size=64, test_size=32, batch_size=32,
        teacher_epochs=1,
        teacher_profile="smoke",
    )  # fmt: skip
    entry = experiments.Entry("kd", "kd", {"alpha": 0.9, "T": 4.0}, teacher="wrn_10_1",
                          student="wrn_10_1")  # fmt: skip
    assert experiments.train_entry(entry, cfg, train=False) is None  # nothing yet, nothing trained
    assert "no finished run" in capsys.readouterr().out
    first = experiments.train_entry(entry, cfg, progress=False)
    assert first.trained and first.name == "kd-wrn_10_1-shapes-smoke-s0"
    assert 0.0 <= first.final["alignment"] <= 1.0 and first.final["alignment_layer"] == "group2"
    assert -1.0 <= first.final["alignment_teacher_similarity"] <= 1.0
    again = experiments.train_entry(entry, cfg, progress=False)
    assert not again.trained and again.final["test_acc"] == first.final["test_acc"]
    read = experiments.train_entry(entry, cfg, train=False)
    assert read.record["hparams"]["T"] == 4.0 and read.model is None
    other = experiments.Entry("kd", "kd", {"T": 2.0}, teacher="wrn_10_1", student="wrn_10_1")
    assert experiments.train_entry(other, cfg, train=False) is None  # a different setting
    rows = leaderboard.leaderboard(records.load_records())
    assert {r["label"] for r in rows} == {"kd", "teacher"}  # the zoo's teacher has a record


def test_measure_attention_reads_cnns_and_vits_and_compares_with_the_teacher():
    from atcourse.data import load_dataset

    test_set = load_dataset("shapes", "test", size=16)
    for arch, layer in (("wrn_10_1", "group2"), ("vit_tiny", "blocks.")):
        model = models.build(arch, seed=0)
        scores = experiments.measure_attention(model, test_set, batch_size=8)
        assert scores["alignment_layer"].startswith(layer), (arch, scores)
        for key in ("alignment", "alignment_pointing", "alignment_auc"):
            assert 0.0 <= scores[key] <= 1.0, (arch, key, scores)
        assert "alignment_teacher_similarity" not in scores
        itself = experiments.measure_attention(model, test_set, teacher=model, batch_size=8)
        assert itself["alignment_teacher_similarity"] == pytest.approx(1.0)
    no_masks = load_dataset("shapes", "test", size=16)
    no_masks.masks = None
    assert experiments.measure_attention(models.build("wrn_10_1"), no_masks) is None
