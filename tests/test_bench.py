"""The benchmark runs end to end on the CPU and reports what it promises (no timing checks)."""

import json

import pytest

from atcourse import bench

TINY = dict(models=("wrn_10_1",), teacher="wrn_10_1", batch_size=16, steps=2, warmup=1,
            device="cpu", data_size=64, progress=False)  # fmt: skip


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


def test_double_backward_methods_are_skipped_under_compile():
    run, skipped = bench._plan(["wrn_10_1"], ["kd", "gradient_at"], "wrn_16_2", compile=True)
    assert run == ["baseline", "kd"]
    assert skipped == [
        {"method": "gradient_at", "reason": "double backward is not supported under torch.compile"}
    ]
    assert bench._plan(["wrn_10_1"], ["gradient_at"], "wrn_16_2", compile=False) == (
        ["baseline", "gradient_at"],
        [],
    )


def test_every_flag_has_help():
    import argparse

    parser = bench.add_arguments(argparse.ArgumentParser())
    assert all(a.help for a in parser._actions)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("Some GPU") is None
