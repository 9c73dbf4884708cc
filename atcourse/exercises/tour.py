"""Notebook 00, setup and tour: its predict-then-run question."""

from __future__ import annotations

from ._common import Prediction

__all__ = ["TEACHER_ATTENTION"]


# --------------------------------------------------------------------------- predict, then run


def _teacher_attention(v: dict[str, float]) -> str:
    if v["chance"] <= 0:
        raise ValueError("observed 'chance' must be positive: it is the object's mean area, in %")
    ratio = v["on_object"] / v["chance"]
    return "chance" if ratio < 1.5 else "above" if ratio < 3 else "far_above"


TEACHER_ATTENTION = Prediction(
    prompt="The teacher learns from class labels only: nothing tells it where the object "
    "is. On test images, what share of its last group's attention map (the mean of squared "
    "activations) will fall on the object, compared with chance (the object's area, what a "
    "map spread evenly scores)?",
    choices={
        "chance": "about chance: less than 1.5 times the object's area",
        "above": "clearly above chance: 1.5 to 3 times it",
        "far_above": "far above chance: more than 3 times it",
    },
    observed=("on_object", "chance"),
    decide=_teacher_attention,
    measured=lambda v: (
        f"{v['on_object']:.1f}% of the map's mass on the object against "
        f"{v['chance']:.1f}% by chance, {v['on_object'] / v['chance']:.1f} times chance"
    ),
    why={
        "chance": "The map is still spread over the whole image. A teacher that has barely "
        "learned its task (the smoke profile trains it for two epochs on 512 images) has no "
        "reason yet to respond to the object more than to the clutter; a trained one usually "
        "does, because on shapes only the object tells the classes apart.",
        "above": "The teacher responds more to the object than to the background, though "
        "much of its last group's activity still sits on edges and distractors. Learning the "
        "task pulls the activations towards the only thing that predicts the class; a longer "
        "training, or another layer, gives another share.",
        "far_above": "Only the object tells the classes apart, so a teacher that has learned "
        "the task responds most where the object is, although it never saw a mask. That is "
        "what attention transfer hopes to pass on. A less trained teacher (smoke), or an "
        "earlier group, scores lower.",
    },
)
