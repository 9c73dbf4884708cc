"""Timings that a busy machine blurs instead of reverses.

One timing per setting on a shared CPU is not a measurement: another process that wakes up
during the first setting's run can make it look ten times slower than the second. Here
every function is run ``repeats`` times, **interleaved** (round r runs all of them, each
round starting one further along, so none always runs first or right after the same
neighbour) after ``warmup`` unrecorded rounds. Load that comes and goes then hits every
function alike, and the **median** with its **interquartile range** (IQR) says how much
the machine disturbed the numbers: a loaded machine widens the range instead of turning
the comparison around.

    timings = compare({"fused": step_fused, "explicit": step_explicit}, repeats=9)
    timings["fused"].median                          # seconds
    (timings["explicit"] / timings["fused"]).median  # ratio of paired rounds

For GPU work, pass ``sync`` (e.g. ``lambda: torch.cuda.synchronize()``): it runs before
each clock reading, so a step is timed to its end, not to its launch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Spread", "compare"]


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one quantity (seconds, for :func:`compare`) in run order.

    ``median`` is the estimate; ``q1`` and ``q3`` are the quartiles (inclusive method:
    both lie within the samples), ``iqr = q3 - q1`` the spread.
    """

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Spread needs at least one sample")
        if not all(math.isfinite(s) for s in self.samples):
            raise ValueError(f"samples must be finite numbers, got {self.samples}")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def _quartiles(self) -> tuple[float, float]:
        if self.n == 1:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def q1(self) -> float:
        return self._quartiles()[0]

    @property
    def q3(self) -> float:
        return self._quartiles()[1]

    @property
    def iqr(self) -> float:
        q1, q3 = self._quartiles()
        return q3 - q1

    def __mul__(self, factor: float) -> Spread:
        """Every sample times ``factor`` (e.g. ``* 1000`` for milliseconds)."""
        return Spread(tuple(s * factor for s in self.samples))

    __rmul__ = __mul__

    def __truediv__(self, other: Spread) -> Spread:
        """Sample-by-sample ratio of two spreads measured in the same rounds.

        Rounds of :func:`compare` ran side by side, so the ratio within a round cancels
        the load both saw; its median is steadier than the ratio of the two medians.
        """
        if not isinstance(other, Spread):
            return NotImplemented
        if other.n != self.n:
            raise ValueError(f"cannot pair {self.n} samples with {other.n}: measure both in "
                             "one compare() call")  # fmt: skip
        if any(s == 0 for s in other.samples):
            raise ZeroDivisionError("a sample of the denominator is 0")
        return Spread(tuple(a / b for a, b in zip(self.samples, other.samples)))

    def __str__(self) -> str:
        return f"{self.median:.4g} (IQR {self.q1:.4g}-{self.q3:.4g}, n={self.n})"


def compare(
    functions: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    warmup: int = 1,
    sync: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Spread]:
    """Time each function ``repeats`` times, interleaved, after ``warmup`` rounds.

    Args:
        functions: name -> a function of no arguments (one step of the work to time).
        repeats: recorded rounds; each calls every function once (at least 1; 5 or more
            for a meaningful IQR).
        warmup: unrecorded rounds first (caches, allocators, lazy initialisation).
        sync: called before every clock reading (``torch.cuda.synchronize`` on a GPU).
        clock: seconds as a float; ``time.perf_counter`` unless a test fakes it.

    Returns:
        name -> :class:`Spread` of the seconds each call took, in round order (so two
        results can be divided round by round), in the order of ``functions``.
    """
    names = list(functions)
    if not names:
        raise ValueError("compare() needs at least one function to time")
    for name, fn in functions.items():
        if not callable(fn):
            raise TypeError(f"{name!r} is {type(fn).__name__}, not a function of no arguments")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")

    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)  # rotate who goes first
        for name in names[shift:] + names[:shift]:
            if sync is not None:
                sync()
            start = clock()
            functions[name]()
            if sync is not None:
                sync()
            elapsed = clock() - start
            if round_ >= warmup:
                samples[name].append(elapsed)
    return {name: Spread(tuple(values)) for name, values in samples.items()}
