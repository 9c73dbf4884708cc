"""The benchmark runs end to end on the CPU and reports what it promises (no timing checks)."""

import json

import pytest

from atcourse import bench

TINY = dict(models=("wrn_10_1",), teacher="wrn_10_1", batch_size=16, steps=2, warmup=1,
            device="cpu", data_size=64, progress=False, side_by_side=False)  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def _tmp_roots(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ATCOURSE_DATA", str(data_root))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))


def _methods():
    return ("baseline", "kd")


def test_run_bench_reports_every_configuration(tmp_path):
    methods = _methods()
    out = tmp_path / "bench.json"
    report = bench.run_bench(methods=methods, out=out, isolate=False, **TINY)

    assert report["methods_run"] == list(methods)
    assert {
        "results",
        "loader_comparison",
        "skipped",
        "targets",
        "machine",
        "args",
        "torch",
        "date",
        "json_path",
    } <= set(report)
    rows = {(r["model"], r["method"], r["loader"]): r for r in report["results"]}
    assert set(rows) == {("wrn_10_1", m, "device") for m in methods} | {
        ("wrn_10_1", "baseline", "dataloader")
    }
    for row in rows.values():
        assert "error" not in row, row
        assert row["images_per_s"] > 0 and row["ms_per_step"] > 0
        assert row["peak_mem_mib"] > 0 and row["step_mem_mib"] >= 0
    base = rows["wrn_10_1", "baseline", "device"]
    assert base["overhead"] == 1.0
    assert base["flops_per_step"] > 0 and base["tflops"] > 0
    ref = rows["wrn_10_1", "baseline", "dataloader"]
    assert ref["precision"] == "fp32" and not ref["channels_last"] and ref["workers"] == 2
    (cmp,) = report["loader_comparison"]
    assert cmp["ratio"] == pytest.approx(base["images_per_s"] / ref["images_per_s"])

    saved = json.loads(out.read_text())
    assert saved["args"]["batch_size"] == 16 and len(saved["results"]) == len(rows)
    assert "model" in bench.format_table(report)


def test_isolated_run_writes_the_default_json(tmp_path):
    report = bench.run_bench(methods=("baseline",), baseline_loader=False, isolate=True,
                             **TINY)  # fmt: skip
    (row,) = report["results"]
    assert "error" not in row, row
    assert row["overhead"] == 1.0 and row["images_per_s"] > 0
    assert "fresh process" in row["mem_measure"]
    path = tmp_path / "runs" / "bench"
    assert [p.name for p in path.iterdir()] == [report["json_path"].rsplit("/", 1)[-1]]
    assert path.joinpath(report["json_path"]).name.startswith("bench-cpu-")


def test_unknown_names_list_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="baseline"):
        bench.run_bench(methods=("no_such_method",), **TINY)
    with pytest.raises(ValueError, match="wrn_16_1"):
        bench.run_bench(**{**TINY, "models": ("no_such_model",)})
    assert bench.main(["--methods", "nope", "--device", "cpu"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_the_choices_compile_only_what_compile_supports_and_reuse_only_teachers():
    from atcourse.bench.choices import choices

    got = choices(
        ["baseline", "kd", "gradient_at"],
        ("fp32", "bf16"),
        compile_methods=["baseline", "gradient_at"],
        reuse_methods=["baseline", "kd"],
    )
    assert ("gradient_at", "fp32", True, False) not in got  # no double backward compiled
    assert ("baseline", "fp32", True, False) in got
    assert ("kd", "fp32", False, True) in got and ("baseline", "fp32", False, True) not in got
    assert {(m, p) for m, p, c, r in got if not c and not r} == {
        (m, p) for m in ("baseline", "kd", "gradient_at") for p in ("fp32", "bf16")
    }


def test_side_by_side_rows_reuse_the_teacher_in_the_same_run():
    from atcourse.bench.choices import compare_choices
    from atcourse.data import load_dataset

    data = load_dataset("shapes", "train", size=64)
    rows = compare_choices(data, model="wrn_10_1", teacher="wrn_10_1", methods=["baseline", "kd"],
                           precisions=("fp32",), reuse_methods=["kd"], batch_size=16, steps=2,
                           warmup=0)  # fmt: skip
    names = [(r["method"], r["teacher"]) for r in rows]
    assert names == [("baseline", "-"), ("kd", "computed"), ("kd", "reused")]
    base = rows[0]
    assert base["vs_student_fp32"] == 1.0 and base["ms_q1"] <= base["ms_per_step"] <= base["ms_q3"]


def test_every_flag_has_help():
    import argparse

    parser = bench.add_arguments(argparse.ArgumentParser())
    assert all(a.help for a in parser._actions)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("Some GPU") is None
