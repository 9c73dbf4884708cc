"""Predict, then run: questions that the learner's own experiment answers.

Before an experiment the learner records what they expect::

    exercises.prediction("02-where-students-look")   # the question and its choices
    exercises.predict("02-where-students-look", "at")

the notebook trains and measures, and a later cell hands the measurement over::

    exercises.check_prediction("02-where-students-look", observed={"baseline": 31.2, ...})

The check decides which choice the measurement supports, says whether the prediction held
in *this* run, and why that outcome happens, or how another run can differ. A prediction
that did not hold is not an error (the outcome of a training run is not fixed, and a
surprise is the point of the exercise): only asking before predicting is.

Each prediction is data (:class:`~atcourse.exercises._common.Prediction`), defined in its
lesson's module next to the lesson's checkers: its question, named choices, the measured
values it needs, the rule that turns them into a choice, and an explanation per outcome.
Measured accuracies and shares are in %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import aft, attention, cam, gradient, kd, leaderboard, tour, vit
from ._common import ExerciseError, Prediction, _ok

__all__ = ["Prediction", "PREDICTIONS", "prediction", "predict", "check_prediction"]


#: id -> prediction; the id starts with the notebook's number.
PREDICTIONS: dict[str, Prediction] = {
    "00-teacher-attention": tour.TEACHER_ATTENTION,
    "01-kd-against-alone": kd.KD_AGAINST_ALONE,
    "02-where-students-look": attention.WHERE_STUDENTS_LOOK,
    "03-gradient-distance": gradient.GRADIENT_DISTANCE,
    "04-cat-kd-rank": cam.CAT_KD_RANK,
    "05-adaptive-weights": aft.ADAPTIVE_WEIGHTS,
    "06-copy-share": vit.COPY_SHARE,
    "07-kd-against-noise": leaderboard.KD_AGAINST_NOISE,
}

# The predictions recorded in this Python process (one notebook kernel), by id.
_recorded: dict[str, str] = {}


def _prediction_or_error(prediction_id: str) -> Prediction:
    if prediction_id not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {prediction_id!r}; valid ids: {', '.join(sorted(PREDICTIONS))}"
        )
    return PREDICTIONS[prediction_id]


def _choice_list(p: Prediction) -> str:
    return "; ".join(f"{name!r}: {text}" for name, text in p.choices.items())


def prediction(prediction_id: str) -> str:
    """The question and its named choices (printed, and returned)."""
    p = _prediction_or_error(prediction_id)
    lines = [p.prompt] + [f"  {name!r}: {text}" for name, text in p.choices.items()]
    text = "\n".join(lines)
    print(text)
    return text


def predict(prediction_id: str, choice: str | None) -> None:
    """Record a prediction before the experiment runs; a later one replaces it.

    Raises:
        ExerciseError: when ``choice`` is not one of the question's choices.
        ValueError: for an unknown id (the message lists the valid ones).
    """
    p = _prediction_or_error(prediction_id)
    if choice is None:
        raise ExerciseError(
            f"no prediction given for {prediction_id!r}: set it to one of the choices "
            f"({_choice_list(p)})"
        )
    name = str(choice).strip().lower()
    if name not in p.choices:
        raise ExerciseError(
            f"{choice!r} is not a choice of {prediction_id!r}; predict one of: {_choice_list(p)}"
        )
    _recorded[prediction_id] = name
    print(f"prediction recorded for {prediction_id!r}: {name!r} ({p.choices[name]})")


def _measured_values(prediction_id: str, p: Prediction, observed: Any) -> dict[str, float]:
    if not isinstance(observed, Mapping):
        raise ValueError(
            f"observed for {prediction_id!r} must be a mapping of the names "
            f"{', '.join(p.observed)} to measured numbers, got {type(observed).__name__}"
        )
    missing = [name for name in p.observed if name not in observed]
    extra = [str(name) for name in observed if name not in p.observed]
    if missing or extra:
        raise ValueError(
            f"observed for {prediction_id!r} needs exactly {', '.join(p.observed)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not expected {', '.join(extra)}" if extra else "")
        )
    values = {}
    for name in p.observed:
        try:
            value = float(observed[name])  # plain numbers and 0-d tensors alike
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"observed {name!r} for {prediction_id!r} must be a number, got {observed[name]!r}"
            ) from err
        if not math.isfinite(value):
            raise ValueError(
                f"observed {name!r} for {prediction_id!r} is {value}: the experiment did not "
                "produce a finite measurement, so there is nothing to check the prediction with"
            )
        values[name] = value
    return values


def check_prediction(prediction_id: str, observed: Mapping[str, Any]) -> None:
    """Check the recorded prediction against what this run measured, and explain the outcome.

    Prints a line starting with "✓" when the prediction held and "✗" when it did not,
    then the measurement and why the run came out that way. A prediction that did not hold
    raises nothing: the outcome is the run's, not a fixed answer.

    Args:
        prediction_id: the question's id.
        observed: the measured values the question needs (:attr:`Prediction.observed`),
            numbers or 0-d tensors.

    Raises:
        ExerciseError: when no prediction was recorded for this id (run the prediction cell
            before the experiment).
        ValueError: for an unknown id, or observed values missing, unexpected or not finite.
    """
    p = _prediction_or_error(prediction_id)
    if prediction_id not in _recorded:
        raise ExerciseError(
            f"no prediction recorded for {prediction_id!r}: run the prediction cell before "
            f"the experiment, exercises.predict({prediction_id!r}, <one of "
            f"{', '.join(repr(c) for c in p.choices)}>). Predicting once the result is known "
            "would check nothing."
        )
    values = _measured_values(prediction_id, p, observed)
    predicted, outcome = _recorded[prediction_id], p.decide(values)
    if outcome not in p.choices:  # pragma: no cover - a bug in the question's rule
        raise RuntimeError(f"{prediction_id!r}: its rule returned {outcome!r}, not a choice")
    details = f"\n  measured: {p.measured(values)}.\n  why: {p.why[outcome]}"
    if predicted == outcome:
        _ok(f"your prediction held in this run: {outcome!r} ({p.choices[outcome]}).{details}")
    else:
        print(
            f"✗ your prediction did not hold in this run: you predicted {predicted!r} "
            f"({p.choices[predicted]}); the run gave {outcome!r} ({p.choices[outcome]})."
            f"{details}\n  Which step of your reasoning does the measurement contradict?"
        )
