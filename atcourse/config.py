"""Profiles and the parameter contract.

A notebook's first code cell (tagged ``parameters``) holds literals only. The next cell
passes them to :func:`configure`, which

1. rejects unknown names (listing the valid ones) and values of the wrong type or range,
2. applies the ``ATCOURSE_PROFILE`` (and ``ATCOURSE_DEVICE``) environment overrides,
3. fills every parameter left as ``None`` from the profile,
4. prints the resolved configuration and returns it as a :class:`Config`.

Profiles:

- ``smoke``: seconds per notebook on 2 CPU cores; exercises the mechanics, nothing more.
- ``lab``: a classroom run on a laptop CPU (minutes) where each method's effect shows.
- ``full``: the papers' recipes (CIFAR, 200 epochs, step schedule), meant for a GPU.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROFILES", "PARAMS", "Param", "Config", "ConfigError", "configure", "profile_defaults"]


class ConfigError(ValueError):
    """A parameter has an unknown name, a wrong type or a value out of range."""


@dataclass(frozen=True)
class Param:
    """One parameter: its type, the values it may take and what it means."""

    type: type | tuple[type, ...]
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = True
    prefix_ok: tuple[str, ...] = field(default=())  # values starting with these pass choices
    default: Any = None  # used when neither the notebook nor the profile sets it

    def check(self, name: str, value: Any) -> Any:
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
            raise ConfigError(
                f"parameter {name!r} must be {_type_names(types)}, not "
                f"{type(value).__name__} {value!r} ({self.help})"
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
    "wrn_16_1", "wrn_16_2", "wrn_16_4", "wrn_40_1", "wrn_40_2", "resnet8x4", "resnet32x4",
    "resnet20", "resnet32", "resnet56", "resnet110", "vit_tiny", "vit_small", "vitc_micro",
)  # fmt: skip

#: Every parameter a notebook or ``atcourse run`` may set. Method knobs live here too, so
#: that there is one place that says what each name means and which values it takes.
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
        str, "auto: bf16 autocast on CUDA, fp32 elsewhere", choices=("auto", "fp32", "bf16")
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
    "test_size": Param(int, "test images used (None: all)", min=1),
    # --- optimisation
    "epochs": Param(int, "student training epochs", min=1),
    "teacher_epochs": Param(int, "teacher training epochs (zoo)", min=1),
    "batch_size": Param(int, "images per step", min=1),
    "lr": Param(float, "peak learning rate (SGD, Nesterov momentum)", min=0.0),
    "optimizer": Param(
        str, "sgd (momentum; None means sgd) or adamw (the ViT recipes)", choices=("sgd", "adamw")
    ),
    "momentum": Param(float, "SGD momentum", min=0.0, max=1.0),
    "weight_decay": Param(float, "L2 weight decay", min=0.0),
    "schedule": Param(str, "learning-rate schedule", choices=("step", "cosine", "constant")),
    "milestones": Param(
        tuple, "step schedule: fractions of training where lr drops", min=0.0, max=1.0
    ),
    "lr_decay": Param(float, "step schedule: factor at each milestone", min=0.0, max=1.0),
    "warmup_epochs": Param(int, "linear warm-up epochs", min=0),
    "label_smoothing": Param(float, "label smoothing of the cross-entropy", min=0.0, max=1.0),
    # --- method knobs (KD, activation AT)
    "alpha": Param(
        float, "KD: weight of the soft loss; CE gets 1 - alpha", min=0.0, max=1.0, default=0.9
    ),
    "T": Param(float, "KD: softmax temperature", min=1e-3, default=4.0),
    "beta": Param(float, "weight of the attention-transfer term", min=0.0),
    "p": Param(float, "AT: the power p in |A|^p", min=0.5, default=2.0),
    "at_mode": Param(str, "AT loss form", choices=("code", "paper"), default="code"),
    "reduce": Param(
        str, "AT: how channels are reduced", choices=("sum", "mean", "max"), default="mean"
    ),
    "sweep": Param(tuple, "values for the notebook's sweep (None: the profile decides)"),
    # --- method knobs (ViT attention transfer: attn_copy, attn_distill)
    "attn_weight": Param(
        float,
        "attention distillation: weight of the summed per-layer KL terms",
        min=0.0,
        default=3.0,
    ),
    "attn_layers": Param(
        (tuple, str),
        "ViT blocks to transfer: indices, 'all', 'early' or 'late' "
        "(None: copy all, distill all but the last quarter)",
    ),
    "pretrain_classes": Param(
        tuple,
        "classes the transfer teacher is pre-trained on; the student learns the others",
        min=0,
        default=(0, 1, 2, 3, 4),
    ),
    "pretrain_scale": Param(
        float,
        "teacher pre-training images as a multiple of train_size (before the class split)",
        min=0.01,
        default=4.0,
    ),
    # --- CAT-KD (atcourse.distill.cam); beta above is its CAT weight
    "cat_pair": Param(
        str,
        "CAT-KD: a reference configuration 'teacher/student' whose beta, R and "
        "normalization become the defaults",
        choices=(
            "resnet32x4/resnet8x4",
            "resnet56/resnet20",
            "resnet110/resnet32",
            "wrn_40_2/wrn_16_2",
            "wrn_40_2/wrn_40_1",
            "vgg13/vgg8",
            "resnet32x4/ShuffleV1",
            "resnet32x4/ShuffleV2",
            "wrn_40_2/ShuffleV1",
            "ResNet50/MobileNetV2",
            "vgg13/MobileNetV2",
            "imagenet:ResNet34/ResNet18",
            "imagenet:ResNet50/MobileNetV2",
        ),
    ),
    "cam_resolution": Param(int, "CAT-KD: R, the size the CAMs are pooled to (None: 2)", min=1),
    "cam_normalize": Param(
        bool, "CAT-KD: L2-normalize each pooled class map (None: only when binarized)"
    ),
    "cam_binarize": Param(
        bool, "CAT-KD: binarize the teacher's CAMs at their mean |CAM|", default=False
    ),
    "cam_classes": Param(int, "CAT-KD: transfer only this many classes per image", min=1),
    "cam_selection": Param(
        str,
        "CAT-KD: with cam_classes, the teacher's top or bottom classes",
        choices=("top", "bottom"),
        default="top",
    ),
    # --- AFD / AFT-KD (method "aft"; the defaults are justified in distill.aft.AFTKD)
    "aft_weighting": Param(
        str,
        "AFD: loss weights from decay rates, or fixed",
        choices=("adaptive", "fixed"),
        default="adaptive",
    ),
    "aft_cam_source": Param(
        str,
        "AFD: the 1x1 conv of the CAM: the classifier's weights, or learned",
        choices=("classifier", "learned"),
        default="classifier",
    ),
    "aft_threshold": Param(
        str,
        "AFD: CAM binarization threshold per map",
        choices=("mean_abs", "mean", "zero"),
        default="mean_abs",
    ),
    "aft_gradient": Param(
        str,
        "AFD: gradient through the binarization: none, or straight-through",
        choices=("none", "ste"),
        default="none",
    ),
    "aft_merge": Param(
        str,
        "AFD: one-channel mask and C channels: add to each, or concat",
        choices=("add", "concat"),
        default="add",
    ),
    "aft_align": Param(
        str,
        "AFD: teacher/student widths: a learned 1x1 conv, or block pooling",
        choices=("conv", "pool"),
        default="conv",
    ),
    "aft_source": Param(
        str,
        "AFD: features before the final ReLU (preact) or after it (features)",
        choices=("preact", "features"),
        default="preact",
    ),
    "aft_cam_class": Param(
        str,
        "AFD: whose class map becomes the mask: the label's or the teacher's top-1",
        choices=("label", "teacher"),
        default="label",
    ),
}

#: What each profile fills in. ``dataset`` None means shapes; full means CIFAR-10.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        dataset="shapes", device="auto", precision="auto", seed=0,
        train_size=512, test_size=256, epochs=1, teacher_epochs=2, batch_size=64,
        lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
        milestones=(0.3, 0.6, 0.8), lr_decay=0.2, warmup_epochs=0, label_smoothing=0.0,
    ),
    # Sized for a 2-core CPU: 12 epochs x 5,000 images is ~940 steps of 64 for a student.
    "lab": dict(
        dataset="shapes", device="auto", precision="auto", seed=0,
        train_size=5000, test_size=2000, epochs=12, teacher_epochs=15, batch_size=64,
        lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
        milestones=(0.3, 0.6, 0.8), lr_decay=0.2, warmup_epochs=0, label_smoothing=0.0,
    ),
    # The attention-transfer paper's CIFAR recipe (REFERENCE.md section 2).
    "full": dict(
        dataset="cifar10", device="auto", precision="auto", seed=0,
        train_size=None, test_size=None, epochs=200, teacher_epochs=200, batch_size=128,
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
    if name not in PARAMS:
        raise ConfigError(_unknown_message(name, PARAMS))
    return PARAMS[name].check(name, value)


def configure(profile: str = "lab", *, verbose: bool = True, **params: Any) -> Config:
    """Validate a notebook's parameters, fill the profile's defaults and print the result.

    Args:
        profile: ``smoke``, ``lab`` or ``full``; the environment variable
            ``ATCOURSE_PROFILE`` overrides it (the tests run every notebook as ``smoke``).
        verbose: print the resolved configuration.
        **params: any name in :data:`PARAMS`; ``None`` means "the profile's value".

    Returns:
        A :class:`Config` holding every profile parameter plus the ones given.

    Raises:
        ConfigError: unknown name, wrong type or value out of range; the message names
            the parameter and its valid values.
    """
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

    values: dict[str, Any] = {"profile": profile}
    sources.setdefault("profile", "given")
    for name, default in PROFILES[profile].items():
        given = checked.pop(name, None)
        values[name] = default if given is None else given
        sources.setdefault(name, "profile" if given is None else "given")
    for name, value in checked.items():  # method knobs that the profile does not define
        values[name] = PARAMS[name].default if value is None else value
    for name in checked:
        sources.setdefault(name, "given")
    cfg = Config(values, sources)
    if verbose:
        print(f"atcourse configuration (profile {profile!r}):")
        print(cfg.table())
    return cfg
