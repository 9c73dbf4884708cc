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
import contextlib
import gc
import importlib
import json
import os
import pkgutil
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.utils._python_dispatch

__all__ = [
    "run_bench",
    "main",
    "add_arguments",
    "run_from_args",
    "PEAK_TFLOPS",
    "DEFAULT_METHODS",
    "available_methods",
]

#: The methods the course benchmarks; any of them not (yet) registered is skipped.
DEFAULT_METHODS = ("baseline", "kd", "at", "at+kd", "gradient_at")

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

#: Methods that back-propagate through an input gradient (double backward), which
#: torch.compile does not support.
DOUBLE_BACKWARD = ("gradient_at",)

_LR = 0.1
_MOMENTUM = 0.9
_WEIGHT_DECAY = 5e-4
_SEED = 0
_TARGETS = {
    "loader_ratio_cpu": 1.5,  # atcourse path / DataLoader path, CPU, WRN-16-1, batch 128
    "at_over_kd": 1.10,  # activation AT costs at most 10% more than KD
    "gradient_at_over_kd": 3.0,  # gradient AT at most 3x KD
    "gpu_wrn_16_2_images_per_s": 60_000.0,  # H100, bf16
}


# ----------------------------------------------------------------------------- helpers


def available_methods() -> list[str]:
    """Registered method names, after importing every module of :mod:`atcourse.distill`.

    Methods register themselves when their module is imported; importing them all here
    finds whatever exists now (modules that fail to import are left out).
    """
    from . import distill

    for info in pkgutil.iter_modules(distill.__path__):
        with contextlib.suppress(Exception):
            importlib.import_module(f"{distill.__name__}.{info.name}")
    return sorted(distill.METHODS)


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name, or None when it is not in :data:`PEAK_TFLOPS`."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the running peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _maxrss_bytes()


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def _bench_data(data: str, size: int):
    from .data import load_dataset

    if data == "shapes":
        return load_dataset("shapes", "train", seed=_SEED, size=size)
    return load_dataset(data, "train", seed=_SEED, size=size)


def _device_batches(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The DeviceLoader's batches, epoch after epoch (set_epoch as fit does)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class _ReferenceDataset(torch.utils.data.Dataset):
    """torchvision's CIFAR10 pattern: HWC uint8 arrays, a PIL image per item, transforms."""

    def __init__(self, dataset, transform) -> None:
        self.data = dataset.images.permute(0, 2, 3, 1).contiguous().numpy()  # [N, H, W, 3]
        self.targets = dataset.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def _reference_batches(
    dataset, batch_size: int, device: torch.device, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches the way the reference repositories and most tutorials make them."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(dataset.mean, dataset.std),
    ])  # fmt: skip
    loader = torch.utils.data.DataLoader(
        _ReferenceDataset(dataset, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    while True:
        for images, labels in loader:
            yield (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))


def _count_flops(step) -> int | None:
    """FLOPs of one call of ``step``: ``FlopCounterMode``, or, where its module tracker
    fails (``autograd.grad`` in the step: gradient AT), the same per-op formulas
    (``flop_registry``) applied by a plain dispatch mode."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            step()
        return int(counter.get_total_flops())
    except Exception:
        pass
    try:
        with _RegistryFlopCounter() as counter:
            step()
        return counter.total
    except Exception:  # a counter failure must not cost the timing
        return None


class _RegistryFlopCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Sums ``torch.utils.flop_counter.flop_registry`` over the aten ops that run."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += int(count(*args, **kwargs, out_val=out))
        return out


# ----------------------------------------------------------------------------- one config


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (model, method, loader) configuration in this process."""
    from . import train as train_mod
    from .data import DeviceLoader
    from .distill import build_method
    from .models import build
    from .runtime import precision_for, seed_everything, synchronize

    device = torch.device(spec["device"])
    reference = spec["loader"] == "dataloader"
    precision = precision_for(device, "fp32" if reference else "auto")
    seed_everything(_SEED)
    dataset = _bench_data(spec["data"], spec["data_size"])
    num_classes = dataset.num_classes
    student = build(spec["model"], num_classes=num_classes)
    from .distill import METHODS

    needs_teacher = getattr(METHODS[spec["method"]], "needs_teacher", True)
    teacher = build(spec["teacher"], num_classes=num_classes) if needs_teacher else None
    method = build_method(spec["method"], student, teacher)
    method = precision.prepare(method)
    method.train()
    optimizer = torch.optim.SGD(
        method.trainable_parameters(), lr=_LR, momentum=_MOMENTUM, weight_decay=_WEIGHT_DECAY
    )
    batch = spec["batch_size"]
    if reference:
        workers = spec["workers"]
        batches = _reference_batches(dataset, batch, device, workers)
    else:
        workers = 0
        loader = DeviceLoader(
            dataset,
            batch,
            train=True,
            device=device,
            seed=_SEED,
            channels_last=precision.channels_last,
        )
        batches = _device_batches(loader)

    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    lr_cfg = {"lr": _LR, "epochs": 1, "schedule": "constant", "warmup_epochs": 0}
    check_every = 1 if device.type == "cpu" else 50  # fit's cadence of host syncs
    total_steps = spec["warmup"] + spec["steps"]
    counter = {"step": 0}

    def step() -> None:
        images, labels = next(batches)
        i = counter["step"]
        lr = train_mod.lr_at(lr_cfg, i / max(total_steps, 1))
        # the loop's own step, so the benchmark times exactly what fit() runs
        train_mod.train_step(method, optimizer, precision, images, labels, lr, sums, correct)
        if i % check_every == 0:
            train_mod._check_finite(sums, 0, i, total_steps)
        counter["step"] = i + 1

    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        mem_before = torch.cuda.memory_allocated(device)
    else:
        gc.collect()
        mem_before = _rss_bytes()

    # One step under the FLOP counter, on the eager model (also the first warm-up step).
    flops = _count_flops(step) if not reference else None
    compiled = bool(spec["compile"]) and not reference
    if compiled:
        mode = "max-autotune-no-cudagraphs" if device.type == "cuda" else "default"
        method.student = torch.compile(method.student, mode=mode)
    for _ in range(spec["warmup"]):
        step()

    synchronize(device)
    times: list[float] = []
    wall0 = time.perf_counter()
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(spec["steps"])
        ]
        for start, end in events:
            start.record()
            step()
            end.record()
        synchronize(device)
        times = [start.elapsed_time(end) / 1000.0 for start, end in events]
    else:
        for _ in range(spec["steps"]):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    train_mod._check_finite(sums, 0, counter["step"] - 1, total_steps)

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        mem = {
            "peak_mem_mib": peak / 2**20,
            "step_mem_mib": (peak - mem_before) / 2**20,
            "mem_measure": "torch.cuda.max_memory_allocated (absolute) and its increase "
            "over the allocation before the first step",
        }
    else:
        peak = _maxrss_bytes()
        isolated = spec.get("isolated", False)
        mem = {
            "peak_mem_mib": peak / 2**20,
            "step_mem_mib": max(peak - mem_before, 0) / 2**20,
            "mem_measure": (
                "ru_maxrss of a fresh process (absolute) and its increase over "
                "the RSS before the first step"
                if isolated
                else "ru_maxrss of a shared process: later configurations show only "
                "growth beyond earlier peaks"
            ),
        }
        if reference and workers:
            mem["mem_measure"] += "; the main process only, not its loader workers"

    median = statistics.median(times)
    row: dict[str, Any] = {
        "model": spec["model"], "method": spec["method"], "loader": spec["loader"],
        "teacher": spec["teacher"] if needs_teacher else None,
        "precision": precision.name, "channels_last": precision.channels_last,
        "compiled": compiled, "batch_size": batch, "steps": spec["steps"],
        "warmup": spec["warmup"], "workers": workers,
        "ms_per_step": median * 1000.0,
        "ms_per_step_min": min(times) * 1000.0, "ms_per_step_max": max(times) * 1000.0,
        "images_per_s": batch / median,
        "images_per_s_wall": batch * spec["steps"] / wall,
        "timer": "cuda events" if device.type == "cuda" else "perf_counter",
        "flops_per_step": flops,
        "tflops": flops / median / 1e12 if flops else None,
        **mem,
    }  # fmt: skip
    return row


def _worker_main(spec_path: str, out_path: str) -> int:
    """Entry point of the fresh process that measures one configuration on the CPU."""
    spec = json.loads(Path(spec_path).read_text())
    spec["isolated"] = True
    row = _measure(spec)
    Path(out_path).write_text(json.dumps(row))
    return 0


def _measure_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`_measure` in a fresh Python process (honest per-config peak RSS)."""
    with tempfile.TemporaryDirectory(prefix="atcourse-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "row.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(
            [sys.executable, "-m", "atcourse.bench", "--_worker", str(spec_path), str(out_path)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"worker exited with {proc.returncode}")
        return json.loads(out_path.read_text())


# ----------------------------------------------------------------------------- the bench


def _default_out(device: torch.device) -> Path:
    from .paths import runs_root

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root() / "bench" / f"bench-{device.type}-{stamp}.json"


def _resolve_out(out: str | Path | None, device: torch.device) -> Path:
    if out is None:
        return _default_out(device)
    path = Path(out)
    if path.suffix != ".json":
        return path / _default_out(device).name
    return path


def _validate(
    models: Sequence[str], methods: Sequence[str], teacher: str
) -> tuple[list[str], list[dict[str, str]]]:
    from .models import build

    for name in (*models, teacher):
        build(name)  # an unknown name raises ValueError listing the valid ones
    registered = available_methods()
    run, skipped = [], []
    for name in methods:
        if name in registered:
            run.append(name)
        elif name in DEFAULT_METHODS:
            skipped.append({"method": name, "reason": "not registered in atcourse.distill yet"})
        else:
            pending = [m for m in DEFAULT_METHODS if m not in registered]
            note = f" (not registered yet: {', '.join(pending)})" if pending else ""
            raise ValueError(f"unknown method {name!r}: choose from {', '.join(registered)}{note}")
    if "baseline" not in run:
        run.insert(0, "baseline")  # every overhead is relative to it
    return list(dict.fromkeys(run)), skipped


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


def _targets(report: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
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
                        "want": f"<= {_TARGETS[key]}",
                        "met": value <= _TARGETS[key],
                    }
                )
    if device.type == "cpu":
        for c in report["loader_comparison"]:
            want = _TARGETS["loader_ratio_cpu"]
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
                want = _TARGETS["gpu_wrn_16_2_images_per_s"]
                out.append(
                    {
                        "name": "wrn_16_2 baseline images/s (GPU, bf16)",
                        "value": r["images_per_s"],
                        "want": f">= {want:,.0f}",
                        "met": r["images_per_s"] >= want,
                    }
                )
    return out


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
) -> dict[str, Any]:
    """Time the training step of each (model, method), and the DataLoader-style baseline.

    Args:
        models: student architectures (:func:`atcourse.models.build` names).
        methods: registered method names; those of :data:`DEFAULT_METHODS` that are not
            registered yet are skipped (listed under ``"skipped"``); ``baseline`` always runs.
        teacher: the teacher architecture (randomly initialised: only its cost matters).
        batch_size, steps, warmup: images per step, timed steps, untimed steps before them.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        baseline_loader: also train each student alone through a PIL + transforms +
            DataLoader pipeline in fp32 and report the ratio.
        compile: ``torch.compile`` the student (methods that need double backward are
            skipped, and said so).
        data: data set name (``shapes`` needs no download).
        out: JSON file, or a folder for the default name; default
            ``runs/bench/bench-<device>-<timestamp>.json``.
        progress: print a line per configuration and the table.
        data_size: images in the training set (default ``max(5000, batch*(warmup+steps+2))``,
            so the timed steps never cross an epoch boundary).
        isolate: run each configuration in a fresh process (default: on the CPU, where that
            is the only honest way to read a peak RSS per configuration).

    Returns:
        A dict with ``results`` (one row per configuration: ``images_per_s``,
        ``ms_per_step``, ``overhead``, ``flops_per_step``, ``tflops``, ``pct_of_peak``,
        ``step_mem_mib``, ``peak_mem_mib``...), ``loader_comparison``, ``skipped``,
        ``methods_run``, ``targets``, ``machine``, ``args`` and ``json_path``.

    Raises:
        ValueError: an unknown model or method name (the message lists the valid ones).
    """
    from .runtime import env_report, resolve_device

    if batch_size <= 0 or steps <= 0 or warmup < 0:
        raise ValueError(
            f"need batch_size > 0, steps > 0, warmup >= 0; got {batch_size}, {steps}, {warmup}"
        )
    dev = resolve_device(device)
    models = list(models)
    methods_run, skipped = _validate(models, list(methods), teacher)
    if compile:
        for name in [m for m in methods_run if m in DOUBLE_BACKWARD]:
            methods_run.remove(name)
            skipped.append(
                {"method": name, "reason": "double backward is not supported under torch.compile"}
            )
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
    _bench_data(data, size)  # generate/cache once here, not in every worker

    configs = [(m, meth, "device") for m in models for meth in methods_run]
    if baseline_loader:
        configs += [(m, "baseline", "dataloader") for m in models]
    for model, method, loader in configs:
        spec = {"model": model, "method": method, "loader": loader, "teacher": teacher,
                "device": str(dev), "batch_size": batch_size, "steps": steps,
                "warmup": warmup, "compile": compile, "data": data, "data_size": size,
                "workers": workers}  # fmt: skip
        try:
            row = _measure_isolated(spec) if isolate else _measure(spec)
        except Exception as exc:  # one failing configuration must not stop the others
            error = str(exc) if isolate else f"{type(exc).__name__}: {exc}"
            row = {
                "model": model,
                "method": method,
                "loader": loader,
                "compiled": compile,
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
    report["targets"] = _targets(report, dev)
    report["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    path = _resolve_out(out, dev)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        help="methods, comma-separated (default: %(default)s; unregistered "
        "ones of these are skipped)",
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
        help="torch.compile the student (skips double-backward methods)",
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
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench from parsed arguments; 2 on a bad name (message on stderr)."""
    try:
        report = run_bench(
            models=args.models, methods=args.methods, teacher=args.teacher,
            batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
            device=args.device, baseline_loader=args.baseline_loader, compile=args.compile,
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


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
