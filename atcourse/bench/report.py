"""The benchmark's report: the printed table, the targets and the GPUs' peaks."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["format_table", "targets", "peak_tflops", "PEAK_TFLOPS", "TARGETS"]

#: Dense bf16 tensor-core peak in TFLOP/s, matched (first hit) against the device name.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)

#: What the benchmark checks its figures against.
TARGETS = {
    "loader_ratio_cpu": 1.5,  # atcourse path / DataLoader path, CPU, WRN-16-1, batch 128
    "at_over_kd": 1.10,  # activation AT costs at most 10% more than KD
    "gradient_at_over_kd": 3.0,  # gradient AT at most 3x KD
    "gpu_wrn_16_2_images_per_s": 60_000.0,  # H100, bf16
}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name, or None when it is not in :data:`PEAK_TFLOPS`."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """The printed table of a :func:`run_bench` report."""
    head = (
        "model",
        "method",
        "loader",
        "images/s",
        "ms/step",
        "min ms",
        "overhead",
        "step MiB",
        "peak MiB",
        "TFLOP/s",
        "% peak",
    )
    rows = []
    for r in report["results"]:
        if r.get("error"):
            rows.append((r["model"], r["method"], r["loader"], "FAILED", *[""] * 7))
            continue
        rows.append((
            r["model"], r["method"] + (" (compiled)" if r.get("compiled") else ""), r["loader"],
            f"{r['images_per_s']:,.0f}", f"{r['ms_per_step']:.1f}",
            f"{r['ms_per_step_min']:.1f}",
            _fmt(r.get("overhead"), ".2f") + ("x" if r.get("overhead") else ""),
            _fmt(r.get("step_mem_mib"), ",.0f"), _fmt(r.get("peak_mem_mib"), ",.0f"),
            _fmt(r.get("tflops"), ".3f"), _fmt(r.get("pct_of_peak"), ".1f"),
        ))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    for c in report["loader_comparison"]:
        lines.append(
            f"{c['model']}: atcourse path {c['atcourse_images_per_s']:,.0f} images/s vs "
            f"DataLoader path {c['dataloader_images_per_s']:,.0f} images/s "
            f"({c['dataloader_workers']} workers, fp32): {c['ratio']:.2f}x"
        )
    for r in report["results"]:
        if r.get("error"):
            lines.append(f"{r['model']} {r['method']} ({r['loader']}) failed: {r['error']}")
    for s in report["skipped"]:
        lines.append(f"skipped {s['method']}: {s['reason']}")
    for t in report["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"target {t['name']}: {_fmt(t['value'], '.2f')} (want {t['want']}) {verdict}")
    return "\n".join(lines)


def targets(report: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    out = []
    ok = [r for r in report["results"] if not r.get("error") and r["loader"] == "device"]

    def ms(model: str, method: str) -> float | None:
        for r in ok:
            if r["model"] == model and r["method"] == method and not r["compiled"]:
                return r["ms_per_step"]
        return None

    for model in report["args"]["models"]:
        kd = ms(model, "kd")
        for name, key in (("at", "at_over_kd"), ("gradient_at", "gradient_at_over_kd")):
            cost = ms(model, name)
            if kd and cost:
                value = cost / kd
                out.append(
                    {
                        "name": f"{model} {name} / kd time per step",
                        "value": value,
                        "want": f"<= {TARGETS[key]}",
                        "met": value <= TARGETS[key],
                    }
                )
    if device.type == "cpu":
        for c in report["loader_comparison"]:
            want = TARGETS["loader_ratio_cpu"]
            out.append(
                {
                    "name": f"{c['model']} atcourse / DataLoader images/s (CPU)",
                    "value": c["ratio"],
                    "want": f">= {want}",
                    "met": c["ratio"] >= want,
                }
            )
    if device.type == "cuda":
        for r in ok:
            if r["model"] == "wrn_16_2" and r["method"] == "baseline":
                want = TARGETS["gpu_wrn_16_2_images_per_s"]
                out.append(
                    {
                        "name": "wrn_16_2 baseline images/s (GPU, bf16)",
                        "value": r["images_per_s"],
                        "want": f">= {want:,.0f}",
                        "met": r["images_per_s"] >= want,
                    }
                )
    return out
