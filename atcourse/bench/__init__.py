"""Training throughput of every distillation method, and of the usual DataLoader recipe.

    python -m atcourse.bench --models wrn_16_1 --steps 15 --warmup 3
    atcourse bench --device cuda --models wrn_16_2 --batch-size 512

For each model and method this times the training step of :func:`atcourse.train.fit`
(same precision policy, same loader, same optimizer) and reports:

- images/s and ms/step: the median over the timed steps, after ``warmup`` untimed ones.
  A step is "fetch the batch + forward + backward + SGD step", so the loader's cost is
  in it. CUDA: CUDA events recorded around each step after a synchronize; CPU:
  ``time.perf_counter``.
- overhead: ms/step of the method over ms/step of the student trained alone (baseline).
- FLOPs of one step (``torch.utils.flop_counter.FlopCounterMode``: matmuls and
  convolutions, forward and backward, teacher included) and the achieved TFLOP/s, with
  the share of the GPU's dense bf16 peak where the device is in :data:`PEAK_TFLOPS`.
- memory. CUDA: ``torch.cuda.max_memory_allocated`` over the steps (absolute) and its
  increase over what was allocated before the first step (the step's own activations,
  gradients, optimizer state). CPU: every configuration runs in a fresh process; the
  peak is that process's ``ru_maxrss`` and the step's memory is the peak minus the RSS
  just before the first step (model, teacher and data set already loaded).

Next to it, the same student, batch size and steps trained "the way the reference
repositories do": PIL images through per-image ``torchvision.transforms``
(RandomCrop(32, padding=4, reflect), RandomHorizontalFlip, ToTensor, Normalize), a
``torch.utils.data.DataLoader`` with worker processes, fp32 and the default memory
format. The ratio of the two is printed.

Results go to a printed table and a JSON file under ``runs/bench/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .. import paths
from ..distill import METHODS
from ..models import build
from ..runtime import env_report, resolve_device
from .attention_cost import materialization_cost
from .choices import compare_choices, format_choices
from .measure import bench_data, measure, measure_isolated
from .report import PEAK_TFLOPS, TARGETS, format_table, peak_tflops, targets

__all__ = [
    "run_bench", "main", "add_arguments", "run_from_args", "format_table", "peak_tflops",
    "materialization_cost", "PEAK_TFLOPS", "TARGETS", "DEFAULT_METHODS",
]  # fmt: skip

#: The methods the course benchmarks by default.
DEFAULT_METHODS = ("baseline", "kd", "at", "at+kd", "gradient_at")


def _default_out(device: torch.device) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return paths.runs_root() / "bench" / f"bench-{device.type}-{stamp}.json"


def _resolve_out(out: str | Path | None, device: torch.device) -> Path:
    if out is None:
        return _default_out(device)
    path = Path(out)
    if path.suffix != ".json":
        return path / _default_out(device).name
    return path


def _validate(models: Sequence[str], methods: Sequence[str], teacher: str) -> list[str]:
    """The methods to run, baseline first; an unknown model or method is a ValueError."""
    for name in (*models, teacher):
        build(name)  # an unknown name raises ValueError listing the valid ones
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}: choose from {', '.join(sorted(METHODS))}")
    run = list(methods)
    if "baseline" not in run:
        run.insert(0, "baseline")  # every overhead is relative to it
    return list(dict.fromkeys(run))


def run_bench(
    *,
    models: Sequence[str] = ("wrn_16_1",),
    methods: Sequence[str] = DEFAULT_METHODS,
    teacher: str = "wrn_16_2",
    batch_size: int = 128,
    steps: int = 20,
    warmup: int = 5,
    device: str = "auto",
    baseline_loader: bool = True,
    compile: bool = False,
    data: str = "shapes",
    out: str | Path | None = None,
    progress: bool = True,
    data_size: int | None = None,
    isolate: bool | None = None,
    side_by_side: bool = True,
    precisions: Sequence[str] = ("fp32", "bf16"),
    reuse: bool = True,
) -> dict[str, Any]:
    """Time the training step of each (model, method), and the DataLoader-style baseline.

    Args:
        models: student architectures (:func:`atcourse.models.build` names).
        methods: registered method names; ``baseline`` always runs.
        teacher: the teacher architecture (randomly initialised: only its cost matters).
        batch_size, steps, warmup: images per step, timed steps, untimed steps before them.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        baseline_loader: also train each student alone through a PIL + transforms +
            DataLoader pipeline in fp32 and report the ratio.
        compile: in the side-by-side table, also time each method with its student
            compiled (``torch.compile``; not the methods that need a double backward).
        data: data set name (``shapes`` needs no download).
        out: JSON file, or a folder for the default name; default
            ``runs/bench/bench-<device>-<timestamp>.json``.
        progress: print a line per configuration and the table.
        data_size: images in the training set (default ``max(5000, batch*(warmup+steps+2))``,
            so the timed steps never cross an epoch boundary).
        isolate: run each configuration in a fresh process (default: on the CPU, where that
            is the only honest way to read a peak RSS per configuration).
        side_by_side: also time the speed choices interleaved in this process
            (:func:`~atcourse.bench.choices.compare_choices`): every method in each of
            ``precisions``, compiled (with ``compile``), and with its teacher's outputs
            reused (with ``reuse``); the rows go to ``report["choices"]``.

    Returns:
        A dict with ``results`` (one row per configuration: ``images_per_s``,
        ``ms_per_step``, ``overhead``, ``flops_per_step``, ``tflops``, ``pct_of_peak``,
        ``step_mem_mib``, ``peak_mem_mib``...), ``loader_comparison``, ``skipped``,
        ``methods_run``, ``targets``, ``machine``, ``args`` and ``json_path``.

    Raises:
        ValueError: an unknown model or method name (the message lists the valid ones).
    """
    if batch_size <= 0 or steps <= 0 or warmup < 0:
        raise ValueError(
            f"need batch_size > 0, steps > 0, warmup >= 0; got {batch_size}, {steps}, {warmup}"
        )
    dev = resolve_device(device)
    models = list(models)
    methods_run = _validate(models, list(methods), teacher)
    skipped: list[dict[str, str]] = []
    isolate = dev.type == "cpu" if isolate is None else isolate
    size = data_size or max(5000, batch_size * (warmup + steps + 2))
    workers = 2 if dev.type == "cpu" else min(4, os.cpu_count() or 1)
    args = {"models": models, "methods": list(methods), "teacher": teacher,
            "batch_size": batch_size, "steps": steps, "warmup": warmup, "device": device,
            "baseline_loader": baseline_loader, "compile": compile, "data": data,
            "data_size": size, "isolate": isolate}  # fmt: skip
    machine = env_report(str(dev), print_report=False)
    gpu_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    peak = peak_tflops(gpu_name) if gpu_name else None
    report: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "device": str(dev), "gpu": gpu_name,
        "peak_bf16_tflops": peak, "machine": machine, "args": args,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "methods_run": methods_run, "skipped": skipped, "results": [],
        "loader_comparison": [],
    }  # fmt: skip
    bench_data(data, size)  # generate/cache once here, not in every worker

    configs = [(m, meth, "device") for m in models for meth in methods_run]
    if baseline_loader:
        configs += [(m, "baseline", "dataloader") for m in models]
    for model, method, loader in configs:
        spec = {"model": model, "method": method, "loader": loader, "teacher": teacher,
                "device": str(dev), "batch_size": batch_size, "steps": steps,
                "warmup": warmup, "compile": False, "data": data, "data_size": size,
                "workers": workers}  # fmt: skip
        try:
            row = measure_isolated(spec) if isolate else measure(spec)
        except Exception as exc:  # one failing configuration must not stop the others
            error = str(exc) if isolate else f"{type(exc).__name__}: {exc}"
            row = {
                "model": model,
                "method": method,
                "loader": loader,
                "compiled": False,
                "error": error,
            }
        finally:
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if row.get("tflops") is not None and peak:
            row["pct_of_peak"] = 100.0 * row["tflops"] / peak
        report["results"].append(row)
        if progress and not row.get("error"):
            print(
                f"[bench] {model} {method} ({loader}): {row['images_per_s']:,.0f} images/s, "
                f"{row['ms_per_step']:.1f} ms/step",
                flush=True,
            )
        elif progress:
            print(f"[bench] {model} {method} ({loader}): FAILED {row['error']}", flush=True)

    for model in models:
        rows = [r for r in report["results"] if r["model"] == model and not r.get("error")]
        base = next(
            (r for r in rows if r["method"] == "baseline" and r["loader"] == "device"), None
        )
        for r in rows:
            if r["loader"] == "device" and base is not None:
                r["overhead"] = r["ms_per_step"] / base["ms_per_step"]
        ref = next((r for r in rows if r["loader"] == "dataloader"), None)
        if base is not None and ref is not None:
            report["loader_comparison"].append({
                "model": model, "atcourse_images_per_s": base["images_per_s"],
                "atcourse_precision": base["precision"],
                "dataloader_images_per_s": ref["images_per_s"],
                "dataloader_workers": ref["workers"],
                "ratio": base["images_per_s"] / ref["images_per_s"],
            })  # fmt: skip
    report["choices"] = []
    if side_by_side:
        usable = [p for p in precisions if p == "fp32" or dev.type != "mps"]
        for model in models:
            rows = compare_choices(
                bench_data(data, size), model=model, teacher=teacher, methods=methods_run,
                precisions=usable, compile_methods=methods_run if compile else (),
                reuse_methods=[m for m in methods_run if reuse and METHODS[m].needs_teacher],
                batch_size=batch_size, steps=steps, warmup=min(warmup, 2), device=dev,
            )  # fmt: skip
            report["choices"] += rows
    report["targets"] = targets(report, dev)
    report["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    path = _resolve_out(out, dev)
    paths.make_dirs(path.parent)
    report["json_path"] = str(path)
    path.write_text(json.dumps(report, indent=2, default=str))
    if progress:
        load = report["load_average_start"]
        print(
            f"\n{dev} ({gpu_name or machine['platform']}), torch {torch.__version__}, "
            f"batch {batch_size}, {steps} timed steps after {warmup}"
            + (f", load average at start {load[0]:.2f}" if load else "")
        )
        print(format_table(report))
        if report["choices"]:
            print("\nthe choices side by side (interleaved, median and IQR):")
            print(format_choices(report["choices"]))
        print(f"\nwritten to {path}")
    return report


# ----------------------------------------------------------------------------- command line


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the bench's flags to ``parser`` (so ``atcourse bench`` can mount them)."""
    parser.add_argument(
        "--models",
        type=_names,
        default=["wrn_16_1"],
        help="student architectures, comma-separated (default: wrn_16_1)",
    )
    parser.add_argument(
        "--methods",
        type=_names,
        default=list(DEFAULT_METHODS),
        help="methods, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--teacher",
        default="wrn_16_2",
        help="teacher architecture for the distillation methods (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per step (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps per configuration (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps before timing (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda", "mps"],
        help="where to train (default: %(default)s)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time each method with its student compiled (not double-backward ones)",
    )
    parser.add_argument(
        "--no-baseline-loader",
        dest="baseline_loader",
        action="store_false",
        help="skip the DataLoader + per-image transforms comparison",
    )
    parser.add_argument(
        "--data", default="shapes", help="data set to draw batches from (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON file or folder for the results "
        "(default: runs/bench/bench-<device>-<timestamp>.json)",
    )
    parser.add_argument(
        "--precisions",
        type=_names,
        default=["fp32", "bf16"],
        help="precisions compared side by side (default: fp32,bf16)",
    )
    parser.add_argument(
        "--no-side-by-side",
        dest="side_by_side",
        action="store_false",
        help="skip the interleaved comparison of precisions, compile and teacher reuse",
    )
    parser.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_false",
        help="leave out the rows whose teacher outputs come from the cache",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench from parsed arguments; 2 on a bad name (message on stderr)."""
    try:
        report = run_bench(
            models=args.models, methods=args.methods, teacher=args.teacher,
            batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
            device=args.device, baseline_loader=args.baseline_loader, compile=args.compile,
            side_by_side=args.side_by_side, precisions=args.precisions, reuse=args.reuse,
            data=args.data, out=args.out, progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        print(f"atcourse bench: {exc}", file=sys.stderr)
        return 2
    if args.quiet:
        print(format_table(report))
    failed = [r for r in report["results"] if r.get("error")]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m atcourse.bench [--models ...] [--methods ...] ...``"""
    parser = argparse.ArgumentParser(
        prog="atcourse bench",
        description="Training images/s, overhead over the student alone, memory and "
        "TFLOP/s of each distillation method, and the DataLoader-style ratio.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
