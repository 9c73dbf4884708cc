"""Profiles and the parameter contract.

A notebook's first code cell (tagged ``parameters``) holds literals only. The next cell
passes them to :func:`configure`, which

1. rejects unknown names (listing the valid ones) and values of the wrong type or range,
2. applies the ``ATCOURSE_PROFILE`` (and ``ATCOURSE_DEVICE``, ``ATCOURSE_TEACHER_PROFILE``)
   environment overrides,
3. fills every parameter left as ``None`` from the profile,
4. prints the resolved configuration and returns it as a :class:`Config`.

The names it accepts are :func:`parameters`: the run's own (:data:`PARAMS`: where, what,
the data sizes and the training recipe), the notebooks' experiment knobs, and each
method's knobs, which every method declares once next to its code
(:mod:`atcourse.distill` hands them to :func:`declare_knobs` when it registers a method).

Profiles:

- ``smoke``: seconds per notebook on 2 CPU cores; exercises the mechanics, nothing more.
- ``lab``: a classroom run on a laptop CPU (minutes) where each method's effect shows.
- ``full``: the papers' recipes (CIFAR, 200 epochs, step schedule), meant for a GPU.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PROFILES", "PARAMS", "RECIPE_KEYS", "Param", "Config", "ConfigError", "configure",
    "profile_defaults", "declare_knobs", "knobs_of", "parameters", "method_of_knob",
    "check_injected",
]  # fmt: skip


class ConfigError(ValueError):
    """A parameter has an unknown name, a wrong type or a value out of range."""


@dataclass(frozen=True)
class Param:
    """One parameter: its type, the values it may take and what it means.

    Attributes:
        type: the accepted type(s); an int is accepted for a float, a list for a tuple.
        help: what it means (shown in errors and in the configuration's table).
        choices: the valid values (None: any of the type).
        min, max: bounds, checked on the value and on each element of a tuple.
        nullable: whether None ("the profile's value" or "the method's default") is allowed.
        prefix_ok: strings starting with one of these pass ``choices`` (``folder:...``).
        default: the value when neither the notebook nor the profile sets it. A method's
            knob takes its default from the method's constructor (:func:`declare_knobs`).
        items: the type of a tuple's elements (checked one by one).
        arg: for a method's knob, the constructor argument it sets (None: the same name).
    """

    type: type | tuple[type, ...]
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = True
    prefix_ok: tuple[str, ...] = field(default=())
    default: Any = None
    items: type | tuple[type, ...] | None = None
    arg: str | None = None

    def check(self, name: str, value: Any) -> Any:
        """``value`` converted (int -> float, list -> tuple) and checked; ConfigError if bad."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"parameter {name!r} must be set: {self.help}")
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tuple in types and isinstance(value, list):
            value = tuple(value)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"parameter {name!r} must be {_type_names(types)}, not a bool")
        if not isinstance(value, types):
            hint = ""
            if tuple in types and not isinstance(value, str):
                hint = f"; a one-element tuple is written ({value!r},) or [{value!r}]"
            raise ConfigError(
                f"parameter {name!r} must be {_type_names(types)}, not "
                f"{type(value).__name__} {value!r} ({self.help}){hint}"
            )
        if isinstance(value, tuple) and self.items is not None:
            item_types = self.items if isinstance(self.items, tuple) else (self.items,)
            for item in value:
                if isinstance(item, bool) or not isinstance(item, item_types):
                    raise ConfigError(
                        f"parameter {name!r} = {value!r}: element {item!r} is not "
                        f"{_type_names(item_types)} ({self.help})"
                    )
        if self.choices is not None and value not in self.choices:
            if not (isinstance(value, str) and value.startswith(self.prefix_ok or ("\0",))):
                extra = (
                    f" or {', '.join(p + '...' for p in self.prefix_ok)}" if self.prefix_ok else ""
                )
                raise ConfigError(
                    f"parameter {name!r} = {value!r} is not valid: choose one of "
                    f"{', '.join(map(repr, self.choices))}{extra}"
                )
        for bound, ok, word in (
            (self.min, lambda v, b: v >= b, ">="),
            (self.max, lambda v, b: v <= b, "<="),
        ):
            if bound is None:
                continue
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, (int, float)) and not ok(item, bound):
                    raise ConfigError(f"parameter {name!r} = {value!r} must be {word} {bound}")
        return value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


_MODEL_NAMES = (
    "wrn_10_1", "wrn_16_1", "wrn_16_2", "wrn_16_4", "wrn_40_1", "wrn_40_2",
    "resnet8x4", "resnet32x4", "resnet20", "resnet32", "resnet56", "resnet110",
    "vit_tiny", "vit_small", "vitc_micro",
)  # fmt: skip

#: The parameters of every run: where and what, the models, the data sizes and the training
#: recipe, plus the notebooks' experiment knobs. Method knobs are not here: each method
#: declares its own (:func:`parameters` gathers them).
PARAMS: dict[str, Param] = {
    # --- where and what
    "profile": Param(str, "smoke, lab or full", choices=("smoke", "lab", "full"), nullable=False),
    "dataset": Param(
        str, "the data set", choices=("shapes", "cifar10", "cifar100"), prefix_ok=("folder:",)
    ),
    "device": Param(
        str, "where to train", choices=("auto", "cpu", "cuda", "mps"), prefix_ok=("cuda:",)
    ),
    "precision": Param(
        str, "auto: bf16 autocast where the GPU or the CPU runs bf16 natively, else fp32",
        choices=("auto", "fp32", "bf16"),
    ),
    "compile": Param(
        bool, "torch.compile the student (not with a double backward)", default=False
    ),
    "teacher_cache_mb": Param(
        int, "memory for the teacher's outputs kept for the next student of a setting "
        "(0: off)", min=0, default=1024,
    ),
    "seed": Param(
        int, "one seed for data order, augmentation and initialisation", min=0, nullable=False
    ),
    # --- models
    "arch": Param(str, "model architecture", choices=_MODEL_NAMES, prefix_ok=("wrn_",)),
    "teacher_arch": Param(str, "teacher architecture", choices=_MODEL_NAMES, prefix_ok=("wrn_",)),
    "student_arch": Param(str, "student architecture", choices=_MODEL_NAMES, prefix_ok=("wrn_",)),
    # --- data sizes
    "train_size": Param(int, "training images used (None: all)", min=1),
    "val_size": Param(
        int, "validation images, held out from the training data (None: the data set's "
        "default; 0: none)", min=0,
    ),
    "test_size": Param(int, "test images used (None: all)", min=1),
    # --- optimisation
    "epochs": Param(int, "student training epochs", min=1),
    "teacher_epochs": Param(int, "teacher training epochs (zoo)", min=1),
    "teacher_seed": Param(
        int, "the teacher's seed: one fixed teacher serves every student seed", min=0, default=0
    ),
    "teacher_profile": Param(
        str, "the profile whose recipe trains the teacher (smoke borrows lab's shipped one)",
        choices=("smoke", "lab", "full"),
    ),
    "batch_size": Param(int, "images per step", min=1),
    "lr": Param(float, "peak learning rate (SGD with momentum, or AdamW)", min=0.0),
    "optimizer": Param(
        str, "sgd (momentum; None means sgd) or adamw (the ViT recipes)", choices=("sgd", "adamw")
    ),
    "momentum": Param(float, "SGD momentum", min=0.0, max=1.0),
    "weight_decay": Param(float, "L2 weight decay", min=0.0),
    "schedule": Param(str, "learning-rate schedule", choices=("step", "cosine", "constant")),
    "milestones": Param(
        tuple, "step schedule: fractions of training where lr drops", min=0.0, max=1.0,
        items=(int, float),
    ),
    "lr_decay": Param(float, "step schedule: factor at each milestone", min=0.0, max=1.0),
    "warmup_epochs": Param(int, "linear warm-up epochs", min=0),
    "label_smoothing": Param(float, "label smoothing of the cross-entropy", min=0.0, max=1.0),
    # --- the notebooks' experiments (not method knobs)
    "sweep": Param(tuple, "values for the notebook's sweep (None: the profile decides)"),
    "pretrain_classes": Param(
        tuple,
        "classes the transfer teacher is pre-trained on; the student learns the others",
        min=0,
        default=(0, 1, 2, 3, 4),
        items=int,
    ),
    "pretrain_scale": Param(
        float,
        "teacher pre-training images as a multiple of train_size (before the class split)",
        min=0.01,
        default=4.0,
    ),
}  # fmt: skip

#: The parameters that make up a training recipe: what changes the weights a run learns,
#: besides the method, its knobs, the models and the seed. The trainer refuses to resume a
#: checkpoint trained under another recipe, the zoo keys its checkpoints on it, and the
#: leaderboard keeps runs under different recipes in different rows.
RECIPE_KEYS = (
    "dataset", "train_size", "epochs", "batch_size", "lr", "momentum", "weight_decay",
    "schedule", "milestones", "lr_decay", "warmup_epochs", "label_smoothing", "optimizer",
)  # fmt: skip

#: Each registered method's knobs: method name -> {configuration name: Param}.
_KNOBS: dict[str, dict[str, Param]] = {}


def declare_knobs(method: str, knobs: Mapping[str, Param]) -> None:
    """Record a method's knobs (called by :func:`atcourse.distill.register`).

    A knob may share its name with a run parameter of :data:`PARAMS` (``label_smoothing``)
    or with another method's knob (``beta``); shared names must agree on their type.
    """
    for name, param in knobs.items():
        others = [PARAMS[name]] if name in PARAMS else []
        others += [k[name] for m, k in _KNOBS.items() if m != method and name in k]
        for other in others:
            if _as_types(other.type) != _as_types(param.type):
                raise TypeError(
                    f"method {method!r} declares {name!r} as {_type_names(_as_types(param.type))}"
                    f" but it is already {_type_names(_as_types(other.type))}"
                )
    _KNOBS[method] = dict(knobs)


def _as_types(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def knobs_of(method: str) -> dict[str, Param]:
    """The knobs a registered method declares (configuration name -> Param)."""
    if method not in _KNOBS:
        raise ConfigError(
            f"unknown method {method!r}: choose one of {', '.join(sorted(_KNOBS)) or '(none)'}"
        )
    return dict(_KNOBS[method])


def method_of_knob(name: str) -> list[str]:
    """The methods that declare a knob called ``name`` (empty for a run parameter)."""
    return sorted(m for m, knobs in _KNOBS.items() if name in knobs and name not in PARAMS)


def parameters() -> dict[str, Param]:
    """Every name a notebook or ``atcourse run`` may set: :data:`PARAMS` and the methods' knobs.

    A knob declared by several methods appears once: its help lists each method's meaning,
    its bounds are those all of them accept (each method checks its own again when it is
    built), and its default is theirs where they agree, else None (each method's own).
    """
    table = dict(PARAMS)
    merged: dict[str, list[tuple[str, Param]]] = {}
    for method, knobs in _KNOBS.items():
        for name, param in knobs.items():
            if name not in PARAMS:
                merged.setdefault(name, []).append((method, param))
    for name, owners in merged.items():
        first = owners[0][1]
        if len(owners) == 1:
            table[name] = dataclasses.replace(first, help=f"{owners[0][0]}: {first.help}")
            continue
        by_help: dict[str, list[str]] = {}
        for method, param in owners:
            by_help.setdefault(param.help, []).append(method)
        defaults = {repr(p.default) for _, p in owners}
        mins = [p.min for _, p in owners if p.min is not None]
        maxs = [p.max for _, p in owners if p.max is not None]
        choices = {p.choices for _, p in owners}
        table[name] = dataclasses.replace(
            first,
            help="; ".join(f"{', '.join(ms)}: {h}" for h, ms in by_help.items()),
            default=first.default if len(defaults) == 1 else None,
            min=min(mins) if len(mins) == len(owners) else None,
            max=max(maxs) if len(maxs) == len(owners) else None,
            choices=first.choices if len(choices) == 1 else None,
        )
    return table


#: What each profile fills in. ``dataset`` None means shapes; full means CIFAR-10.
PROFILES: dict[str, dict[str, Any]] = {
    # The mechanics in seconds, with the lab's shipped teacher (its profile's recipe).
    "smoke": dict(
        dataset="shapes", device="auto", precision="auto", seed=0,
        compile=False, teacher_cache_mb=1024, teacher_seed=0, teacher_profile="lab",
        teacher_arch="wrn_16_2", student_arch="wrn_10_1",
        train_size=512, val_size=128, test_size=256, epochs=1, teacher_epochs=2,
        batch_size=64,
        lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
        milestones=(0.3, 0.6, 0.8), lr_decay=0.2, warmup_epochs=0, label_smoothing=0.0,
    ),
    # Calibrated on a 2-core CPU (docs/calibration.md): the student alone reaches its
    # plateau in 15 epochs x 10,000 images (~4,700 steps of 32); the teacher, trained once
    # for 20 epochs, ships with the package.
    "lab": dict(
        dataset="shapes", device="auto", precision="auto", seed=0,
        compile=False, teacher_cache_mb=1024, teacher_seed=0, teacher_profile="lab",
        teacher_arch="wrn_16_2", student_arch="wrn_10_1",
        train_size=10000, val_size=1000, test_size=2000, epochs=15, teacher_epochs=20,
        batch_size=32,
        lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine",
        milestones=(0.3, 0.6, 0.8), lr_decay=0.2, warmup_epochs=1, label_smoothing=0.0,
    ),
    # The attention-transfer paper's CIFAR recipe (REFERENCE.md section 2).
    "full": dict(
        dataset="cifar10", device="auto", precision="auto", seed=0,
        compile=False, teacher_cache_mb=1024, teacher_seed=0, teacher_profile="full",
        teacher_arch="wrn_16_2", student_arch="wrn_16_1",
        train_size=None, val_size=5000, test_size=None, epochs=200, teacher_epochs=200,
        batch_size=128,
        lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
        milestones=(0.3, 0.6, 0.8), lr_decay=0.2, warmup_epochs=0, label_smoothing=0.0,
    ),
}  # fmt: skip


def profile_defaults(profile: str) -> dict[str, Any]:
    """A copy of a profile's defaults (raises ConfigError for an unknown profile)."""
    PARAMS["profile"].check("profile", profile)
    return dict(PROFILES[profile])


class Config(Mapping):
    """The resolved parameters of one run: a read-only mapping with attribute access.

    ``cfg.epochs`` and ``cfg["epochs"]`` are the same; ``cfg.replace(epochs=3)`` returns
    a checked copy; ``cfg.to_dict()`` is what run records store.
    """

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str] | None = None):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_sources", dict(sources or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(_unknown_message(name, self._values)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only: use cfg.replace(name=value)")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Config({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}

    def replace(self, **changes: Any) -> Config:
        """A copy with some values changed (checked like configure's arguments)."""
        values = dict(self._values)
        sources = dict(self._sources)
        for name, value in changes.items():
            values[name] = _check(name, value)
            sources[name] = "replaced"
        return Config(values, sources)

    def source(self, name: str) -> str:
        """Where a value came from: given, profile, environment or replaced."""
        return self._sources.get(name, "given")

    def table(self) -> str:
        """The resolved configuration as aligned text, each value with its source."""
        width = max(len(k) for k in self._values)
        lines = []
        for name, value in self._values.items():
            shown = list(value) if isinstance(value, tuple) else value
            src = self._sources.get(name, "given")
            lines.append(f"  {name:<{width}} = {shown!r:<22} ({src})")
        return "\n".join(lines)


def _unknown_message(name: str, valid: Mapping[str, Any] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown parameter {name!r}.{hint} Valid parameters: {', '.join(sorted(valid))}"


def _check(name: str, value: Any) -> Any:
    table = parameters()
    if name not in table:
        raise ConfigError(_unknown_message(name, table))
    return table[name].check(name, value)


def _assigned_names(source: str) -> set[str]:
    """The names a cell's source assigns at its top level."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def check_injected(namespace: Mapping[str, Any]) -> None:
    """In a notebook papermill runs, refuse names it injected that the notebook does not declare.

    papermill writes ``-p`` values into a cell of their own, headed ``# Parameters``, right
    after the cell tagged ``parameters``, and only warns ("Passed unknown parameter") about a
    name that cell does not declare, so a misspelt knob would be ignored while the run goes
    on. The kernel's input history (``In``) holds both cells; this compares them.

    Args:
        namespace: the notebook's globals (a no-op where there is no ``In`` history or no
            injected cell, e.g. outside papermill).

    Raises:
        ConfigError: naming the unknown names and the notebook's parameters.
    """
    history = namespace.get("In")
    if not isinstance(history, list):
        return
    marks = [i for i, src in enumerate(history) if isinstance(src, str)
             and src.lstrip().startswith("# Parameters") and i > 0]  # fmt: skip
    if not marks:
        return
    declared = _assigned_names(history[marks[-1] - 1])
    unknown = sorted(_assigned_names(history[marks[-1]]) - declared)
    if declared and unknown:
        raise ConfigError(
            f"papermill set {', '.join(map(repr, unknown))}, which this notebook does not "
            f'declare (papermill only warns "Passed unknown parameter"). Its parameters '
            f"are: {', '.join(sorted(declared))}"
        )


def configure(profile: str = "lab", *, verbose: bool = True, **params: Any) -> Config:
    """Validate a notebook's parameters, fill the profile's defaults and print the result.

    Args:
        profile: ``smoke``, ``lab`` or ``full``; the environment variable
            ``ATCOURSE_PROFILE`` overrides it (the tests run every notebook as ``smoke``).
        verbose: print the resolved configuration.
        **params: any name of :func:`parameters`; ``None`` means "the profile's value" (or,
            for a method's knob, the method's default).

    Returns:
        A :class:`Config` holding every profile parameter plus the ones given.

    Raises:
        ConfigError: unknown name, wrong type or value out of range; the message names
            the parameter and its valid values. Called from a notebook that papermill runs,
            also a name papermill injected that the notebook does not declare
            (:func:`check_injected`).
    """
    caller = inspect.currentframe()
    if caller is not None and caller.f_back is not None:
        check_injected(caller.f_back.f_globals)
    sources: dict[str, str] = {}
    env_profile = os.environ.get("ATCOURSE_PROFILE")
    if env_profile:
        PARAMS["profile"].check("ATCOURSE_PROFILE", env_profile)
        if env_profile != profile:
            sources["profile"] = f"ATCOURSE_PROFILE, notebook said {profile!r}"
        profile = env_profile
    profile = PARAMS["profile"].check("profile", profile)
    checked = {name: _check(name, value) for name, value in params.items()}
    env_device = os.environ.get("ATCOURSE_DEVICE")
    if env_device:
        checked["device"] = _check("device", env_device)
        sources["device"] = "ATCOURSE_DEVICE"
    env_teacher = os.environ.get("ATCOURSE_TEACHER_PROFILE")
    if env_teacher:  # e.g. smoke teachers for a quick check before the lab teacher ships
        checked["teacher_profile"] = _check("teacher_profile", env_teacher)
        sources["teacher_profile"] = "ATCOURSE_TEACHER_PROFILE"

    values: dict[str, Any] = {"profile": profile}
    sources.setdefault("profile", "given")
    for name, default in PROFILES[profile].items():
        given = checked.pop(name, None)
        values[name] = default if given is None else given
        sources.setdefault(name, "profile" if given is None else "given")
    table = parameters()
    for name, value in checked.items():  # knobs that the profile does not define
        values[name] = table[name].default if value is None else value
    for name in checked:
        sources.setdefault(name, "given")
    cfg = Config(values, sources)
    if verbose:
        print(f"atcourse configuration (profile {profile!r}):")
        print(cfg.table())
    return cfg
