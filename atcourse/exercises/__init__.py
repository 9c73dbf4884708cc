"""Checkers for the notebooks' exercises, one module per lesson.

In a notebook an exercise is a solution cell, whose solution lines sit between a line
``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` (the student edition replaces them with
a stub that raises ``NotImplementedError``), followed by a check cell::

    atcourse.exercises.check_kd_loss(my_kd_loss)

A checker runs the learner's function on small fixed tensors, compares it with the
reference implementation in :mod:`atcourse.distill`, and when they differ raises
:class:`ExerciseError` whose message names the likely mistake (a missing ``T**2``, a
``KLDivLoss`` reduction that also divides by the number of classes, a map normalized over
the wrong dimension, ...). A correct answer prints one line starting with "✓".

"Explain why" exercises are multiple choice: :func:`question` shows one,
:func:`check_choice` checks an answer and explains a wrong one.

"Predict, then run" exercises are answered by the learner's own run: :func:`predict`
records a prediction before an experiment, :func:`check_prediction` takes what the run
measured, says whether the prediction held and why the run came out that way.

Modules: ``kd`` (notebook 01), ``attention`` (02), ``gradient`` (03), ``cam`` (04),
``aft`` (05), ``vit`` (06), ``leaderboard`` (07), ``questions`` (every lesson's
multiple-choice questions), ``predictions`` (every lesson's predict-then-run questions);
``_common`` holds what the checkers share.
"""

from __future__ import annotations

from ._common import ExerciseError
from .aft import check_attentional_feature_block, check_decay_weights
from .attention import check_at_loss, check_at_loss_paper, check_attention_map
from .cam import check_cat_loss, check_class_activation_maps
from .gradient import check_flip_penalty, check_input_gradient
from .kd import check_kd_loss, check_reduction_bug, check_softmax_T
from .leaderboard import check_gap_closed, check_seed_summary
from .predictions import PREDICTIONS, Prediction, check_prediction, predict, prediction
from .questions import QUESTIONS, check_choice, question
from .vit import check_attention_distillation_loss, check_attention_rollout

__all__ = [
    "ExerciseError",
    "check_kd_loss",
    "check_softmax_T",
    "check_attention_map",
    "check_at_loss",
    "check_reduction_bug",
    "check_input_gradient",
    "check_flip_penalty",
    "check_seed_summary",
    "check_gap_closed",
    "check_choice",
    "question",
    "QUESTIONS",
    "check_attention_distillation_loss",
    "check_attention_rollout",
    "check_class_activation_maps",
    "check_cat_loss",
    "check_decay_weights",
    "check_attentional_feature_block",
    # predict, then run; the paper form of the AT loss
    "check_at_loss_paper",
    "Prediction",
    "PREDICTIONS",
    "prediction",
    "predict",
    "check_prediction",
]
