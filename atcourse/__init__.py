"""atcourse: knowledge distillation by attention transfer, as a course.

The short surface a notebook needs::

    import atcourse
    cfg = atcourse.configure(profile="lab", dataset="shapes", seed=0)
    train_set, val_set, test_set = atcourse.load_splits(cfg)
    teacher = atcourse.zoo.teacher("wrn_16_2", cfg=cfg)
    result = atcourse.fit(method, cfg, train_set, test_set, val_set=val_set)

Layout (data flows one way, nothing imports a module above it): paths, config, runtime
-> data -> models -> metrics -> distill -> records -> train -> zoo -> experiments ->
leaderboard (with anchors) -> viz, widgets, exercises -> sweep, bench, cli.
``docs/architecture.md`` draws it.
"""

__version__ = "0.1.0"

from . import (
    anchors,
    config,
    data,
    distill,
    exercises,
    experiments,
    leaderboard,
    metrics,
    models,
    paths,
    records,
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
    "anchors", "config", "data", "distill", "exercises", "experiments", "leaderboard",
    "metrics", "models", "paths", "records", "runtime", "train", "viz", "zoo",
]  # fmt: skip
