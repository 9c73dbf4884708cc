"""One benchmark configuration: a (model, method, loader) trained for some steps and timed.

The step is the training loop's own (:func:`atcourse.train.train_step`, with the loop's
optimizer and precision policy), so the benchmark times exactly what ``fit`` runs. On the
CPU each configuration runs in a fresh process (:func:`measure_isolated`), the only honest
way to read a peak RSS per configuration.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.utils._python_dispatch

from .. import train
from ..data import DeviceLoader, ImageDataset, load_dataset
from ..distill import METHODS, build_method
from ..models import build
from ..runtime import precision_for, seed_everything, synchronize

__all__ = ["measure", "measure_isolated", "bench_data", "worker_main", "RECIPE", "SEED"]

SEED = 0
#: The optimizer and schedule of every timed step: SGD at a constant learning rate.
RECIPE = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "optimizer": "sgd",
          "epochs": 1, "schedule": "constant", "warmup_epochs": 0}  # fmt: skip


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


def bench_data(data: str, size: int) -> ImageDataset:
    """The training images the benchmark draws its batches from."""
    return load_dataset(data, "train", seed=SEED, size=size)


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


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (model, method, loader) configuration in this process."""
    device = torch.device(spec["device"])
    reference = spec["loader"] == "dataloader"
    precision = (
        precision_for(device, "fp32", channels_last=False)  # the reference recipe's
        if reference
        else precision_for(device, spec.get("precision", "auto"))
    )
    seed_everything(SEED)
    dataset = bench_data(spec["data"], spec["data_size"])
    num_classes = dataset.num_classes
    student = build(spec["model"], num_classes=num_classes)
    needs_teacher = METHODS[spec["method"]].needs_teacher
    teacher = build(spec["teacher"], num_classes=num_classes) if needs_teacher else None
    method = build_method(spec["method"], student, teacher)
    method = precision.prepare(method)
    method.train()
    optimizer = train.make_optimizer(method.trainable_parameters(), RECIPE)
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
            seed=SEED,
            channels_last=precision.channels_last,
        )
        batches = _device_batches(loader)

    sums = train.EpochSums(device)
    check_every = 1 if device.type == "cpu" else 50  # fit's cadence of host syncs
    total_steps = spec["warmup"] + spec["steps"]
    counter = {"step": 0}

    def step() -> None:
        images, labels = next(batches)
        i = counter["step"]
        lr = train.lr_at(RECIPE, i / max(total_steps, 1))
        # the loop's own step, so the benchmark times exactly what fit() runs
        train.train_step(method, optimizer, precision, images, labels, lr, sums)
        if i % check_every == 0:
            train.check_finite(sums, 0, i, total_steps)
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
    train.check_finite(sums, 0, counter["step"] - 1, total_steps)

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


def worker_main(spec_path: str, out_path: str) -> int:
    """Entry point of the fresh process that measures one configuration on the CPU."""
    spec = json.loads(Path(spec_path).read_text())
    spec["isolated"] = True
    row = measure(spec)
    Path(out_path).write_text(json.dumps(row))
    return 0


def measure_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`measure` in a fresh Python process (honest per-config peak RSS)."""
    with tempfile.TemporaryDirectory(prefix="atcourse-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "row.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parent.parent.parent)
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
