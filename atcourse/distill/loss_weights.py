"""Loss weights from decay rates: AFD's adaptive balance of its two losses (Eq. 4).

Yang, Yu, Sheng, Yang, "Attention and feature transfer based knowledge distillation",
Scientific Reports 13:18369, 2023. With L^0 the first epoch's losses::

    Dr_CE = L_CE / L^0_CE,   Dr_AFD = L_AFD / L^0_AFD
    alpha = Dr_CE / ((Dr_CE + Dr_AFD) / 2),   beta = Dr_AFD / ((Dr_CE + Dr_AFD) / 2)
    L = alpha * L_CE + beta * L_AFD                                                  (4)

The term that has fallen least (relative to where it started) gets the larger weight;
alpha + beta = 2 always. Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019) is the
documented relative (it uses the ratio of the last two epochs and a softmax). The scheme
knows nothing of AFD: any method with several loss terms can keep one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["loss_decay_weights", "AdaptiveLossWeights"]


def loss_decay_weights(
    losses: Mapping[str, float], initial: Mapping[str, float], eps: float = 1e-12
) -> dict[str, float]:
    """Eq. (4): weights from decay rates, ``w_i = Dr_i / mean_j Dr_j``, ``Dr_i = L_i / L^0_i``.

    Args:
        losses: the latest epoch's mean loss of each term, e.g. ``{"ce": 0.8, "afd": 0.3}``.
        initial: the first epoch's, L^0, with the same names.
        eps: floor of L^0, so a term that started at exactly 0 does not divide by zero.

    Returns:
        ``{name: weight}``; the weights sum to the number of terms (alpha + beta = 2), and
        all are 1 when every term has decayed at the same rate.
    """
    if set(losses) != set(initial) or not losses:
        raise ValueError(
            f"losses and initial losses must name the same terms, got {sorted(losses)} and "
            f"{sorted(initial)}"
        )
    rates = {name: float(losses[name]) / max(float(initial[name]), eps) for name in losses}
    mean = sum(rates.values()) / len(rates)
    if not mean > 0:  # every loss at 0 (or a NaN): nothing to balance
        return {name: 1.0 for name in rates}
    return {name: rate / mean for name, rate in rates.items()}


class AdaptiveLossWeights:
    """The loss weights of Eq. (4) and the state behind them, updated once per epoch.

    During the first epoch, and the second (whose rates are L^0 / L^0 = 1), every weight
    is 1; after each later epoch e the weights for epoch e + 1 come from epoch e's mean
    losses against the first epoch's, L^0. With ``adaptive=False`` the weights stay
    ``fixed`` for the whole run.

    Args:
        terms: the loss names, in order (``("ce", "afd")``: alpha, beta).
        adaptive: use the decay rates; False keeps ``fixed``.
        fixed: the constant weights (default 1 each: the point the adaptive weights start
            from, and where they stay when the terms decay at the same rate).
    """

    def __init__(
        self,
        terms: Sequence[str] = ("ce", "afd"),
        *,
        adaptive: bool = True,
        fixed: Sequence[float] | None = None,
    ):
        self.terms = tuple(terms)
        fixed = tuple(float(w) for w in (fixed if fixed is not None else [1.0] * len(terms)))
        if len(fixed) != len(self.terms) or any(w < 0 for w in fixed):
            raise ValueError(
                f"fixed weights must be {len(self.terms)} non-negative numbers for "
                f"{self.terms}, got {fixed}"
            )
        self.adaptive = adaptive
        self.fixed = fixed
        self.initial: dict[str, float] | None = None
        self.weights: dict[str, float] = dict(zip(self.terms, fixed, strict=True))
        if adaptive:
            self.weights = {name: 1.0 for name in self.terms}

    def update(self, summary: Mapping[str, float]) -> dict[str, float]:
        """Take one epoch's mean losses (``{"ce": ..., "afd": ...}``); return the new weights."""
        if not self.adaptive:
            return dict(self.weights)
        missing = [t for t in self.terms if t not in summary]
        if missing:
            raise ValueError(
                f"the epoch summary has no mean loss for {missing} (it has {sorted(summary)}); "
                "pass each term's mean over the epoch under the term's name"
            )
        losses = {t: float(summary[t]) for t in self.terms}
        if self.initial is None:
            self.initial = losses
        self.weights = loss_decay_weights(losses, self.initial)
        return dict(self.weights)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a resume (plain Python values)."""
        return {
            "terms": list(self.terms),
            "adaptive": self.adaptive,
            "fixed": list(self.fixed),
            "initial": None if self.initial is None else dict(self.initial),
            "weights": dict(self.weights),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if tuple(state["terms"]) != self.terms or bool(state["adaptive"]) != self.adaptive:
            raise ValueError(
                f"saved loss weights are for terms {state['terms']} (adaptive="
                f"{state['adaptive']}), not {list(self.terms)} (adaptive={self.adaptive})"
            )
        self.fixed = tuple(state["fixed"])
        self.initial = None if state["initial"] is None else dict(state["initial"])
        self.weights = dict(state["weights"])
