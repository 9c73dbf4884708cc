"""The registry of methods: every method, and every variant of one, registers the same way.

A method class declares its knobs (:attr:`~atcourse.distill.base.Distiller.knobs`) and is
registered under a name with :func:`register`; a variant is the same class registered under
another name with some constructor arguments fixed::

    @register("cat_kd")
    @register("cat_kd_bin", fixed={"cam_binarize": True})
    class CATKD(Distiller): ...

The command line, the benchmark, the notebooks and the leaderboard then build any method
from its name and one validated configuration::

    method = build_method("kd", student, teacher, **hparams_from_config("kd", cfg))
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import ConfigError, Param, declare_knobs
from .base import Distiller

__all__ = ["MethodSpec", "METHODS", "register", "build_method", "hparams_from_config",
           "unused_knobs"]  # fmt: skip


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the registered name (records and tables use it).
        cls: the :class:`~atcourse.distill.base.Distiller` subclass.
        needs_teacher: whether it is built with a teacher.
        fixed: constructor arguments the name fixes (a variant's identity).
        knobs: configuration name -> :class:`~atcourse.config.Param`, each with the
            constructor argument it sets (``arg``) and the constructor's default.
    """

    name: str
    cls: type[Distiller]
    needs_teacher: bool
    fixed: Mapping[str, Any] = field(default_factory=dict)
    knobs: Mapping[str, Param] = field(default_factory=dict)

    @property
    def double_backward(self) -> bool:
        """Whether a training step needs a double backward (no ``torch.compile``)."""
        return bool(self.cls.double_backward)

    def build(self, student: nn.Module, teacher: nn.Module | None = None, **hparams: Any):
        """The method on ``student`` (and ``teacher``) with ``hparams`` as keyword arguments."""
        clash = sorted(set(hparams) & set(self.fixed))
        if clash:
            raise ValueError(
                f"method {self.name!r} fixes {', '.join(f'{k}={self.fixed[k]!r}' for k in clash)}"
                f"; it cannot be set (use method {self.cls.name!r} for other values)"
            )
        kwargs = {**hparams, **self.fixed}
        if not self.needs_teacher:
            if teacher is not None:
                raise ValueError(
                    f"method {self.name!r} trains without a teacher; pass teacher=None"
                )
            return self.cls(student, **kwargs)
        if teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher; pass teacher=...")
        return self.cls(student, teacher, **kwargs)


#: name -> the registered method
METHODS: dict[str, MethodSpec] = {}


def _constructor_default(cls: type, arg: str) -> Any:
    """The default of ``arg`` in ``cls``'s constructor, following ``**kwargs`` to its base."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if arg in params:
            default = params[arg].default
            return None if default is inspect.Parameter.empty else default
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    raise TypeError(f"{cls.__name__} declares a knob for {arg!r}, which its constructor lacks")


def register(name: str, *, teacher: bool = True, fixed: Mapping[str, Any] | None = None):
    """Class decorator: make a Distiller buildable by ``build_method(name, ...)``.

    Args:
        name: the method's name in records, tables and on the command line.
        teacher: whether it is built with a teacher.
        fixed: constructor arguments this name fixes (for a variant of a method); their
            knobs are not the variant's.
    """
    fixed = dict(fixed or {})

    def deco(cls: type[Distiller]) -> type[Distiller]:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is already registered")
        knobs = {}
        for key, param in cls.knobs.items():
            arg = param.arg or key
            if arg in fixed:
                continue
            knobs[key] = dataclasses.replace(param, arg=arg, default=_constructor_default(cls, arg))
        spec = MethodSpec(name, cls, teacher, fixed, knobs)
        METHODS[name] = spec
        declare_knobs(name, knobs)
        return cls

    return deco


def _spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(
    name: str, student: nn.Module, teacher: nn.Module | None = None, **hparams: Any
) -> Distiller:
    """Build a registered method by name; an unknown name lists the valid ones."""
    return _spec(name).build(student, teacher, **hparams)


def hparams_from_config(name: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of method ``name`` that ``cfg`` sets (None values skipped).

    Only the method's own knobs are read, each checked against the method's declaration
    and passed under its constructor argument (``at_mode`` -> ``mode`` for AT).
    """
    kwargs = {}
    for key, param in _spec(name).knobs.items():
        value = cfg.get(key)
        if value is not None:
            try:
                kwargs[param.arg or key] = param.check(key, value)
            except ConfigError as exc:
                raise ConfigError(f"method {name!r}: {exc}") from None
    return kwargs


def unused_knobs(name: str, given: Mapping[str, Any]) -> list[str]:
    """The names in ``given`` that are some method's knob but not method ``name``'s.

    For refusing, rather than silently recording, a knob a run would not use
    (``atcourse train --method baseline -p beta=1000``).
    """
    own = set(_spec(name).knobs)
    everyone = {k for spec in METHODS.values() for k in spec.knobs}
    return sorted(k for k, v in given.items() if v is not None and k in everyone - own)
