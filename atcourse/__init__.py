"""atcourse: knowledge distillation by attention transfer, as a course.

The short surface a notebook needs::

    import atcourse
    cfg = atcourse.configure(profile="lab", dataset="shapes", seed=0)
    train_set, test_set = atcourse.load_splits(cfg)
    teacher = atcourse.zoo.teacher("wrn_16_2", cfg=cfg)
    result = atcourse.fit(method, cfg, train_set, test_set)

Layout (data flows one way): data -> models -> distill -> train -> results -> viz.
"""

__version__ = "0.1.0"

from . import (
    config,
    data,
    distill,
    exercises,
    metrics,
    models,
    paths,
    results,
    runtime,
    train,
    viz,
    zoo,
)  # fmt: skip
from .config import configure
from .data import load_dataset, load_splits
from .train import fit

__all__ = [
    "__version__", "configure", "fit", "load_dataset", "load_splits",
    "config", "data", "distill", "exercises", "metrics", "models", "paths", "results",
    "runtime", "train", "viz", "zoo",
]  # fmt: skip
