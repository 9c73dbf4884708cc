"""Read intermediate outputs of any ``nn.Module`` by layer name.

Attention transfer compares intermediate activations of two networks, so every loss in the
course starts by *tapping* some layers: a forward hook on each named submodule stores its
output. Layers are addressed by their dotted names from ``model.named_modules()``
(``"group1"``, ``"layer3.4.preact"``, ``"blocks.2.attn.probs"``). Built-in models also declare
which names play which role (``model.tap_points``), read with :func:`tap_points`.

Example::

    with Taps(model, tap_points(model, "groups")) as taps:
        logits = model(images)
    maps = [taps[name] for name in taps.keys()]  # e.g. (B, C_i, H_i, W_i) each
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, KeysView, Sequence, ValuesView
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Taps", "TapNameError", "tap_points", "forward_with_taps", "forward_until", "ROLES"]

#: Roles a model may declare in its ``tap_points`` dict.
ROLES = ("groups", "preact", "features", "classifier", "attention_logits", "attention_probs")

_LIST_HINT = "[n for n, _ in model.named_modules()]"


class TapNameError(KeyError):
    """A layer name that is not a submodule of the model.

    A ``KeyError`` whose message prints as written (``KeyError`` would show it quoted, with
    its line breaks escaped).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _child_names(model: nn.Module, limit: int = 8) -> list[str]:
    names = [n for n, _ in model.named_children()]
    return names[:limit] + (["..."] if len(names) > limit else [])


def _unknown_name_error(model: nn.Module, name: str) -> TapNameError:
    valid = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    lines = [f"{type(model).__name__} has no submodule named {name!r}."]
    if close:
        lines.append(f"Closest valid names: {', '.join(repr(c) for c in close)}.")
    else:
        lines.append(f"Its top-level children are: {', '.join(_child_names(model)) or '(none)'}.")
    lines.append(f"List every valid name with: {_LIST_HINT}")
    return TapNameError("\n".join(lines))


class Taps:
    """Forward hooks that keep the latest output of named submodules.

    Args:
        model: any ``nn.Module``.
        names: one dotted submodule name or a sequence of them (duplicates are ignored).
        detach: store ``output.detach()`` (for a frozen teacher) instead of the output itself,
            which stays in the autograd graph so losses on it train the model.

    After each forward pass of ``model``, ``taps[name]`` is the output of that submodule from
    that pass (a module returning a tuple contributes its first element). Use as a context
    manager, or call :meth:`remove` when done; the stored outputs stay readable afterwards.

    Raises:
        TapNameError: (a ``KeyError``) when a name is not a submodule of ``model``; the
            message suggests the closest valid names.
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | str, *, detach: bool = False):
        if isinstance(names, str):
            names = [names]
        self.model = model
        self.names: list[str] = list(dict.fromkeys(names))
        self.detach = detach
        self.outputs: dict[str, Tensor] = {}
        # Resolve every name before hooking any, so a typo leaves the model untouched.
        modules = [(name, self._resolve(name)) for name in self.names]
        self._handles: list[RemovableHandle] = [
            module.register_forward_hook(self._make_hook(name)) for name, module in modules
        ]

    def _resolve(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise _unknown_name_error(self.model, name) from None

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            if self.detach and isinstance(output, Tensor):
                output = output.detach()
            self.outputs[name] = output

        return hook

    def remove(self) -> None:
        """Unregister all hooks (safe to call more than once)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self.outputs[name]
        except KeyError:
            if name in self.names:
                raise KeyError(
                    f"no output recorded for {name!r} yet: run a forward pass of the model "
                    "while the taps are registered (or the module was not called)"
                ) from None
            raise KeyError(f"{name!r} is not tapped; tapped names: {self.names}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.outputs

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def keys(self) -> KeysView[str]:
        """Names with a recorded output, in the order they were first recorded."""
        return self.outputs.keys()

    def values(self) -> ValuesView[Tensor]:
        """Recorded outputs, in the order of :meth:`keys`."""
        return self.outputs.values()

    def items(self):
        """``(name, output)`` pairs, in the order of :meth:`keys`."""
        return self.outputs.items()

    def clear(self) -> None:
        """Drop the recorded outputs (the hooks stay registered)."""
        self.outputs.clear()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"Taps({type(self.model).__name__}, {self.names}, detach={self.detach}, {state})"


def tap_points(model: nn.Module, role: str) -> list[str]:
    """The layer names ``model`` declares for ``role``.

    Roles: ``"groups"`` (per-stage feature maps ``(B, C_i, H_i, W_i)`` or ViT block outputs
    ``(B, N, C)``), ``"preact"`` (last pre-activation map), ``"features"`` (last feature map
    fed to pooling and the classifier), ``"classifier"`` (the final ``nn.Linear``),
    ``"attention_logits"`` / ``"attention_probs"`` (ViT, ``(B, heads, N, N)`` per block).

    Raises:
        ValueError: when the model declares no ``tap_points`` or not this role; pass layer
            names to :class:`Taps` explicitly in that case.
    """
    points = getattr(model, "tap_points", None)
    if isinstance(points, dict) and role in points:
        return list(points[role])
    kind = type(model).__name__
    if isinstance(points, dict):
        why = f"{kind} declares no {role!r} tap points (it declares: {', '.join(points)})."
    else:
        why = f"{kind} declares no tap points (no `tap_points` dict attribute)."
    candidates = ", ".join(_child_names(model)) or "(none)"
    raise ValueError(
        f"{why} Pass layer names explicitly, e.g. Taps(model, ['<name>', ...]). "
        f"Its top-level modules are: {candidates}. All names: {_LIST_HINT}"
    )


def forward_with_taps(
    model: nn.Module, images: Tensor, names: Sequence[str] | str, *, detach: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``model(images)`` once and return ``(logits, {name: output})`` for the named layers.

    ``images`` is whatever the model takes (``(B, 3, H, W)`` for the built-in models).

    Raises:
        TapNameError: for a name that is not a submodule.
        RuntimeError: when a named module was not called during the forward pass.
    """
    with Taps(model, names, detach=detach) as taps:
        logits = model(images)
    missing = [n for n in taps.names if n not in taps]
    if missing:
        raise RuntimeError(f"these modules were not called by {type(model).__name__}: {missing}")
    return logits, dict(taps.outputs)


class _Reached(Exception):
    """Raised by a hook once every layer a forward was run for has produced its output."""


def forward_until(
    model: nn.Module, images: Tensor, names: Sequence[str] | str
) -> dict[str, Tensor]:
    """The outputs of the named layers, from a forward that stops once they have all run.

    A frozen teacher whose loss term needs only some layers (its group outputs, its first
    blocks' attention) pays for nothing after them. The outputs are detached.

    Returns:
        ``{name: output}`` for ``names``.

    Raises:
        TapNameError: for a name that is not a submodule.
        RuntimeError: when a named module was not called during the forward pass.
    """
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    waiting = set(names)

    def reached(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            waiting.discard(name)
            if not waiting:
                raise _Reached

        return hook

    with Taps(model, names, detach=True) as taps:
        # registered after the taps' own hooks, so each output is stored before the stop
        stops = [model.get_submodule(n).register_forward_hook(reached(n)) for n in names]
        try:
            model(images)
        except _Reached:
            pass
        finally:
            for handle in stops:
                handle.remove()
    missing = [n for n in names if n not in taps]
    if missing:
        raise RuntimeError(f"these modules were not called by {type(model).__name__}: {missing}")
    return {n: taps[n] for n in names}
