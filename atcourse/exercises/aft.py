"""Notebook 05, AFD (AFT-KD): the adaptive loss weights and the attentional feature block.

And the lesson's predict-then-run question (:mod:`atcourse.exercises.predictions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from atcourse.distill import (
    attentional_feature_block,
    binary_mask,
    class_activation_maps,
    loss_decay_weights,
)

from ._common import (
    ExerciseError,
    Prediction,
    _as_tensor,
    _call,
    _diagnose,
    _inputs,
    _ok,
)

__all__ = ["check_decay_weights", "check_attentional_feature_block", "ADAPTIVE_WEIGHTS"]


def _label_maps(cams: Tensor, labels: Tensor) -> Tensor:
    """Each image's map of its own label: [B, K, H, W], [B] -> [B, 1, H, W]."""
    return cams[torch.arange(len(labels)), labels].unsqueeze(1)


def check_decay_weights(fn: Callable[[float, float, float, float], Any]) -> None:
    """Check ``fn(loss_ce, loss_afd, initial_ce, initial_afd) -> (alpha, beta)``.

    The reference is :func:`atcourse.distill.loss_decay_weights` (AFT-KD's Eq. (4) in
    notebook 05): Dr = L / L^0 per term, alpha = Dr_CE / mean(Dr), beta = Dr_AFD / mean(Dr).
    """
    what = "decay weights"
    cases = [(1.0, 0.8, 2.0, 1.0), (0.3, 0.9, 2.3, 1.2), (0.5, 0.25, 1.0, 0.5)]
    for case in cases:
        ce, afd, ce0, afd0 = case
        got = _call(fn, *case)
        try:
            alpha, beta = (float(v) for v in got)
        except (TypeError, ValueError):
            raise ExerciseError(
                f"{what}: return two numbers (alpha, beta), got {type(got).__name__} {got!r}"
            ) from None
        ref = loss_decay_weights({"ce": ce, "afd": afd}, {"ce": ce0, "afd": afd0})
        expected = torch.tensor([ref["ce"], ref["afd"]])
        rates = torch.tensor([ce / ce0, afd / afd0])
        raw = torch.tensor([ce, afd])
        _diagnose(
            torch.tensor([alpha, beta]),
            expected,
            [
                (
                    rates,
                    "you returned the decay rates themselves: divide each by their mean "
                    "(Dr_CE + Dr_AFD) / 2, so that alpha + beta = 2",
                ),
                (
                    rates / rates.sum(),
                    "you divided by the sum of the rates; the formula divides by their mean, "
                    "(Dr_CE + Dr_AFD) / 2, so alpha + beta = 2, not 1",
                ),
                (
                    # with two terms, inverting the rates is the same as swapping the weights
                    expected.flip(0),
                    "alpha and beta are swapped, or the rates inverted: Dr = L / L^0 (the "
                    "current loss over the first epoch's), alpha = Dr_CE / mean and beta = "
                    "Dr_AFD / mean, so the loss that has fallen less weighs more",
                ),
                (
                    raw / raw.mean(),
                    "you used the raw losses; use the decay rates L / L^0, which do not "
                    "depend on each loss's scale",
                ),
            ],
            what + f" for L = ({ce}, {afd}), L^0 = ({ce0}, {afd0})",
        )
    _ok("decay weights: correct; alpha + beta = 2 and the slower-falling loss weighs more")


def check_attentional_feature_block(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(preact [B, C, H, W], weight [K, C], labels [B]) -> AFB [B, C, H, W]``.

    The reference is :func:`atcourse.distill.attentional_feature_block` with its
    defaults: the CAM of each image's label from the pre-activation features, binarized
    above its mean absolute value, added to every channel of ReLU(PreF).
    """
    what = "attentional feature block"
    B, C, K, H, W = 3, 4, 5, 4, 4
    pre = _inputs(B, C, H, W, seed=11, scale=1.0)
    weight = _inputs(K, C, seed=12, scale=1.0)
    labels = torch.tensor([3, 0, 4])
    got = _as_tensor(_call(fn, pre, weight, labels), what)
    if got.shape == (B, C + 1, H, W):
        raise ExerciseError(
            f"{what}: shape {list(got.shape)}: you stacked the mask as an extra channel; "
            "Eq. (2) adds it to every channel (broadcast [B, 1, H, W] over C)"
        )
    if got.shape != (B, C, H, W):
        raise ExerciseError(
            f"{what}: expected shape [B, C, H, W] = {[B, C, H, W]}, got {list(got.shape)}"
        )
    expected = attentional_feature_block(pre, weight, labels)
    relu = F.relu(pre)

    def block(features: Tensor, maps_from: Tensor, threshold: str = "mean_abs") -> Tensor:
        cams = _label_maps(class_activation_maps(maps_from, weight), labels)
        return features + binary_mask(cams, threshold)

    cams_label = _label_maps(class_activation_maps(pre, weight), labels)
    _diagnose(
        got,
        expected,
        [
            (block(pre, pre), "the feature part is ReLU(PreF): apply the ReLU before adding"),
            (
                block(relu, relu),
                "compute the CAM from the pre-activation features PreF, not from ReLU(PreF): "
                "the point of the method is what the ReLU throws away",
            ),
            (
                block(relu, pre, "zero"),
                "binarize above each map's mean absolute value, not above zero",
            ),
            (block(relu, pre, "mean"), "binarize above each map's mean |CAM|, not its mean"),
            (
                relu + cams_label,
                "binarize the class map (1 above its mean |CAM|, else 0) before adding it",
            ),
            (
                relu + binary_mask(class_activation_maps(pre, weight)[:, :1]),
                "you used class 0's map for every image: take the map of each image's label",
            ),
        ],
        what,
    )
    _ok(f"{what}: correct (CAM of the label from PreF, binarized, added to ReLU(PreF))")


# --------------------------------------------------------------------------- predict, then run


def _heavier_term(v: dict[str, float]) -> str:
    if math.isclose(v["alpha"], v["beta"], rel_tol=0.0, abs_tol=1e-9):
        return "neither"
    return "ce" if v["alpha"] > v["beta"] else "afd"


ADAPTIVE_WEIGHTS = Prediction(
    prompt="With adaptive weights, alpha (on the cross-entropy) and beta (on the AFB loss) "
    "follow Eq. (4): the loss that has fallen less since the first epoch gets the larger "
    "weight, and alpha + beta = 2. Averaged over the epochs of the adaptive run, which term "
    "will weigh more?",
    choices={
        "ce": "the cross-entropy: alpha above 1 on average",
        "afd": "the AFB loss: beta above 1 on average",
        "neither": "neither: both weights stay at 1",
    },
    observed=("alpha", "beta"),
    decide=_heavier_term,
    measured=lambda v: f"mean weights over the run: alpha {v['alpha']:.3f}, beta {v['beta']:.3f}",
    why={
        "ce": "The cross-entropy fell less than the AFB loss, each relative to its first "
        "epoch: on shapes it stays near chance (ln 10) for the first epochs while the AFB loss "
        "falls at once, so Dr_CE > Dr_AFD and the weight goes to the labels, the opposite of "
        "'attention first'. A student that leaves its plateau early, or a longer "
        "run in which the cross-entropy catches up, moves the average towards beta.",
        "afd": "The cross-entropy fell faster than the AFB loss, each relative to its first "
        "epoch, so the slower AFB term got the larger weight, as Eq. (4) intends. The weights "
        "react to speeds, not to sizes: a student stuck near chance for longer would have "
        "tipped them the other way.",
        "neither": "The run was too short for a decay rate: the first two epochs run at "
        "alpha = beta = 1 (no rate yet, then L^0 / L^0), and the smoke profile trains one "
        "epoch. From the third epoch on, the slower-falling loss gets the larger weight.",
    },
)
