"""The speed choices side by side: precision, torch.compile, and reusing the teacher's outputs.

Every configuration (a method in a precision, eager or compiled, its teacher computed every
step or served from a :class:`~atcourse.distill.teacher_cache.TeacherCache`) is built in this
process and its training step (:func:`atcourse.train.train_step`) is timed **interleaved**
with all the others (:func:`atcourse.timing.compare`), so load that comes and goes on a shared
machine hits every configuration alike. Each row gives the median ms/step with its
interquartile range, images/s, the first step's time (where ``torch.compile`` pays its
warm-up) and the cost relative to the student alone in fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import train
from ..data import DeviceLoader, ImageDataset
from ..distill import METHODS, build_method
from ..distill.teacher_cache import TeacherCache
from ..models import build
from ..runtime import precision_for, synchronize
from ..timing import compare
from .measure import RECIPE, SEED

__all__ = ["Choice", "choices", "compare_choices", "format_choices"]

Choice = tuple[str, str, bool, bool]  # method, precision, compiled, teacher reused


def choices(
    methods: Sequence[str],
    precisions: Sequence[str] = ("fp32", "bf16"),
    compile_methods: Sequence[str] = (),
    reuse_methods: Sequence[str] = (),
) -> list[Choice]:
    """The configurations to compare: every method in every precision, eager; the
    ``compile_methods`` compiled and the ``reuse_methods`` with their teacher served from the
    cache, both in the first precision. A double-backward method is never compiled."""
    first = precisions[0]
    out: list[Choice] = [(m, p, False, False) for m in methods for p in precisions]
    out += [(m, first, True, False) for m in compile_methods if not METHODS[m].double_backward]
    out += [(m, first, False, True) for m in reuse_methods if METHODS[m].needs_teacher]
    return list(dict.fromkeys(out))


def _step_function(
    choice: Choice, model: str, teacher_arch: str, batches: list[tuple[torch.Tensor, ...]],
    device: torch.device,
) -> Callable[[], None]:  # fmt: skip
    method_name, precision_name, compiled, reused = choice
    precision = precision_for(device, precision_name)
    student = build(model, num_classes=10, seed=SEED)
    teacher = build(teacher_arch, num_classes=10, seed=SEED + 1)
    method = build_method(method_name, student, teacher if METHODS[method_name].needs_teacher
                          else None)  # fmt: skip
    method = precision.prepare(method).train()
    optimizer = train.make_optimizer(method.trainable_parameters(), RECIPE)
    if precision.channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    cache = None
    if reused:
        cache = TeacherCache(max_bytes=1 << 40)
        cache.start("bench")
        method.teacher_cache = cache
        for i, (x, y) in enumerate(batches):  # a first student of the setting fills it
            cache.at(0, i)
            with precision.autocast():
                method(x, y)
    if compiled:
        method.student.compile()
    counter = [0]

    def step() -> None:
        i = counter[0] % len(batches)
        if cache is not None:
            cache.at(0, i)
        x, y = batches[i]
        train.train_step(method, optimizer, precision, x, y, RECIPE["lr"])
        counter[0] += 1

    return step


def compare_choices(
    data: ImageDataset,
    *,
    model: str,
    teacher: str,
    methods: Sequence[str],
    precisions: Sequence[str] = ("fp32", "bf16"),
    compile_methods: Sequence[str] = (),
    reuse_methods: Sequence[str] = (),
    batch_size: int = 64,
    steps: int = 15,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Time the configurations of :func:`choices` side by side; one row per configuration."""
    device = torch.device(device)
    loader = DeviceLoader(data, batch_size, train=True, device=device, seed=SEED)
    loader.set_epoch(0)
    batches = [b for _, b in zip(range(max(4, min(steps, 16))), loader)]
    configs = choices(methods, precisions, compile_methods, reuse_methods)
    functions, first_step = {}, {}
    for choice in configs:
        fn = _step_function(choice, model, teacher, batches, device)
        synchronize(device)
        t0 = time.perf_counter()
        fn()  # the first step: where torch.compile compiles
        synchronize(device)
        first_step[choice] = time.perf_counter() - t0
        functions[choice] = fn
    sync = (lambda: synchronize(device)) if device.type != "cpu" else None
    timings = compare(functions, repeats=steps, warmup=warmup, sync=sync)
    base = (methods[0], precisions[0], False, False)
    rows = []
    for choice, spread in timings.items():
        method, precision, compiled, reused = choice
        ms = spread * 1000.0
        rows.append({
            "model": model, "method": method, "precision": precision, "compiled": compiled,
            "teacher": ("reused" if reused else "computed") if METHODS[method].needs_teacher
            else "-",
            "ms_per_step": ms.median, "ms_q1": ms.q1, "ms_q3": ms.q3,
            "images_per_s": batch_size / spread.median, "first_step_s": first_step[choice],
            "vs_student_fp32": (spread / timings[base]).median if base in timings else None,
            "steps": steps, "batch_size": batch_size,
        })  # fmt: skip
    return rows


def format_choices(rows: Sequence[dict[str, Any]]) -> str:
    """The side-by-side table, one line per configuration."""
    head = ("model", "method", "precision", "compiled", "teacher", "ms/step (IQR)", "images/s",
            "first step s", "x student fp32")  # fmt: skip
    lines = [head]
    for r in rows:
        ratio = r["vs_student_fp32"]
        lines.append((
            r["model"], r["method"], r["precision"], "yes" if r["compiled"] else "no",
            r["teacher"], f"{r['ms_per_step']:.1f} ({r['ms_q1']:.1f}-{r['ms_q3']:.1f})",
            f"{r['images_per_s']:,.0f}", f"{r['first_step_s']:.1f}",
            "-" if ratio is None else f"{ratio:.2f}x",
        ))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(*lines)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in lines)
