"""Notebook 07, the leaderboard: the summary over seeds and the share of the gap closed.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ._common import (
    ExerciseError,
    Prediction,
    _call,
    _ok,
)

__all__ = ["check_seed_summary", "check_gap_closed", "KD_AGAINST_NOISE"]


def _as_pair(value: Any, what: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ExerciseError(f"{what} should return a pair (mean, std), got {value!r}")
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError) as err:
        raise ExerciseError(f"{what} should return two numbers, got {value!r}") from err


def check_seed_summary(fn: Callable[[Sequence[float]], tuple[float, float]]) -> None:
    """Check ``fn(values) -> (mean, std)``: the mean and the *sample* standard deviation.

    The leaderboard's spread over seeds divides by n - 1 (Bessel's correction): with three
    seeds the population formula (divide by n) understates the spread by a fifth.
    """
    what = "seed_summary"
    for values in ([0.80, 0.84, 0.85], [0.71, 0.69, 0.75, 0.70, 0.73]):
        n = len(values)
        mean = sum(values) / n
        ss = sum((v - mean) ** 2 for v in values)
        std = math.sqrt(ss / (n - 1))
        got_mean, got_std = _as_pair(_call(fn, list(values)), what)
        if not math.isclose(got_mean, mean, rel_tol=1e-6):
            if math.isclose(got_mean, std, rel_tol=1e-6):
                raise ExerciseError("you returned (std, mean): the order is (mean, std)")
            raise ExerciseError(f"{what}: mean of {values} should be {mean:.6f}, got {got_mean}")
        mistakes = [
            (math.sqrt(ss / n), "you divided by n (the population std, np.std's default): "
             "over a few seeds use the sample std, dividing by n - 1 (ddof=1)"),
            (ss / (n - 1), "you returned the variance: take its square root"),
            (ss / n, "you returned the population variance: divide by n - 1 and take the "
             "square root"),
            (std / math.sqrt(n), "that is the standard error of the mean (std / sqrt(n)); "
             "the leaderboard shows the spread of single runs, the std itself"),
        ]  # fmt: skip
        if not math.isclose(got_std, std, rel_tol=1e-6):
            for wrong, message in mistakes:
                if math.isclose(got_std, wrong, rel_tol=1e-6):
                    raise ExerciseError(message)
            raise ExerciseError(f"{what}: std of {values} should be {std:.6f}, got {got_std}")
    _ok("seed_summary: mean and sample standard deviation (n - 1), as in the leaderboard")


def check_gap_closed(fn: Callable[[float, float, float], float]) -> None:
    """Check ``fn(alone, distilled, teacher) -> fraction``: the share of the gap closed.

    (distilled - alone) / (teacher - alone): 0 means no better than the student trained
    alone, 1 means as good as the teacher. The same formula works on test errors (both
    differences change sign), which is how papers' error tables compare with accuracies.
    """
    what = "gap_closed"
    cases = [(91.23, 92.07, 93.69), (70.0, 75.0, 80.0), (64.60, 59.40, 74.64)]
    for alone, distilled, teacher in cases:
        expected = (distilled - alone) / (teacher - alone)
        got = _call(fn, alone, distilled, teacher)
        try:
            got = float(got)
        except (TypeError, ValueError) as err:
            raise ExerciseError(f"{what} should return a number, got {got!r}") from err
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        mistakes = [
            (100 * expected, "you returned a percentage: return the fraction (1.0 = the "
             "whole gap)"),
            (-expected, "the sign is reversed: a student better than the one trained alone "
             "should give a positive share"),
            ((teacher - distilled) / (teacher - alone), "that is the share of the gap left "
             "open (1 - the answer)"),
            ((distilled - alone) / teacher, "divide by the gap (teacher - alone), not by the "
             "teacher's accuracy"),
            ((distilled - alone) / (teacher - distilled), "divide by the whole gap between "
             "teacher and student alone (teacher - alone)"),
        ]  # fmt: skip
        for wrong, message in mistakes:
            if math.isclose(got, wrong, rel_tol=1e-6, abs_tol=1e-9):
                raise ExerciseError(message)
        raise ExerciseError(
            f"{what}({alone}, {distilled}, {teacher}) should be {expected:.4f}, got {got:.4f}"
        )
    errors = (8.77, 7.93, 6.31)  # the AT paper's test errors for the first case
    from_errors = float(_call(fn, *errors))
    if not math.isclose(from_errors, (7.93 - 8.77) / (6.31 - 8.77), rel_tol=1e-6):
        raise ExerciseError("on test errors the same formula should give the same share")
    _ok(
        f"gap_closed: AT closed {from_errors:.0%} of the teacher-student gap in the AT "
        f"paper's CIFAR-10 row; a negative share means the method hurt"
    )


# --------------------------------------------------------------------------- predict, then run


def _verdict(v: dict[str, float]) -> str:
    # leaderboard.compare_to_reference's rule: the gain paired by seed against twice its
    # standard error, and no verdict with fewer than two shared seeds
    if v["n_paired"] < 2:
        return "cannot_tell"
    if abs(v["kd_gain"]) <= 2 * v["kd_se"]:
        return "noise"
    return "beats" if v["kd_gain"] > 0 else "worse"


KD_AGAINST_NOISE = Prediction(
    prompt="Section 3's rule: a method beats the student alone when its gain, paired seed by "
    "seed, is larger than twice its standard error. For KD against the student alone, with "
    "the runs your leaderboard holds once this notebook has trained what is missing, what "
    "will the verdict be?",
    choices={
        "beats": "KD beats the student alone by more than the noise",
        "noise": "the gain is within the noise",
        "worse": "KD is worse than the student alone by more than the noise",
        "cannot_tell": "cannot tell: the two rows share fewer than two seeds",
    },
    observed=("kd_gain", "kd_se", "n_paired"),
    decide=_verdict,
    measured=lambda v: (
        f"KD {v['kd_gain']:+.2f} points over the student alone, paired over "
        f"{v['n_paired']:.0f} seed(s)"
        + (f", standard error {v['kd_se']:.2f} points" if v["n_paired"] >= 2 else "")
    ),
    why={
        "beats": "The gain is more than twice its standard error: KD's gain survives the "
        "seed-to-seed variation of the gain itself. With three seeds this is a screen, not a "
        "proof; more seeds shrink the standard error.",
        "noise": "The gain is within twice its standard error: from seed to seed, KD's gain "
        "over the student alone varies too much to rank the two rows. More seeds shrink the "
        "standard error.",
        "worse": "KD fell below the student alone by more than the noise: its soft targets "
        "cost accuracy here, which a teacher that is wrong or over-confident on many "
        "training images does.",
        "cannot_tell": "With fewer than two seeds shared by the two rows there is no spread "
        "of the gain to compare it with, however large it looks: another seed moves every "
        "run. `atcourse run 07 --seeds 1,2` adds seeds 1 and 2.",
    },
)
