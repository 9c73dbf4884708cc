"""Notebook 07's checkers: the summary over seeds and the share of the gap closed."""

from __future__ import annotations

from exercise_helpers import accepts, rejects

from atcourse import exercises as ex


def test_check_seed_summary(capsys):
    import statistics

    import numpy as np

    accepts(ex.check_seed_summary, lambda v: (statistics.fmean(v), statistics.stdev(v)), capsys)
    rejects(ex.check_seed_summary, lambda v: (np.mean(v), np.std(v)), "n - 1")
    rejects(ex.check_seed_summary, lambda v: (np.mean(v), np.var(v, ddof=1)), "variance")
    rejects(ex.check_seed_summary, lambda v: (np.std(v, ddof=1), np.mean(v)), "(mean, std)")
    rejects(
        ex.check_seed_summary,
        lambda v: (np.mean(v), np.std(v, ddof=1) / len(v) ** 0.5),
        "standard error",
    )
    rejects(ex.check_seed_summary, lambda v: np.mean(v), "pair")


def test_check_gap_closed(capsys):
    accepts(ex.check_gap_closed, lambda a, d, t: (d - a) / (t - a), capsys)
    rejects(ex.check_gap_closed, lambda a, d, t: 100 * (d - a) / (t - a), "percentage")
    rejects(ex.check_gap_closed, lambda a, d, t: (a - d) / (t - a), "sign")
    rejects(ex.check_gap_closed, lambda a, d, t: (t - d) / (t - a), "left open")
    rejects(ex.check_gap_closed, lambda a, d, t: (d - a) / t, "teacher's accuracy")
    rejects(ex.check_gap_closed, lambda a, d, t: (d - a) / (t - d), "whole gap")
