"""Explorers over the course's figures, and notebooks whose widget outputs read without a kernel.

:func:`explore` is the one image explorer of the notebooks: controls (ipywidgets or short
specs) -> a draw function that returns a matplotlib figure -> the picture, redrawn when a
control moves. Its output carries the picture of its first view as an ordinary PNG beside
the live widget, so a notebook shows that picture wherever widgets cannot run (GitHub,
nbviewer, nbconvert, JupyterLab before "Trust" or without a kernel). Pictures are drawn at
twice the figure's dpi and shown at the figure's own size: never stretched to the output's
width, and 7-point text stays sharp on a high-density screen.

:func:`freeze` (``python -m atcourse.widgets NOTEBOOK...``, and on every save in ``make lab``
through :func:`pre_save_hook`) turns the widget outputs of a notebook into plain outputs and
drops the stored widget state, which a re-run would invalidate: an explorer keeps its PNG,
a tqdm widget bar becomes its final text (read from the stored widget state, so
"100%|██████████| 936/936 [05:52<00:00, ...]" instead of the "0%" text a widget stores at
its creation), a bar closed with ``leave=False`` goes, and a widget whose state was not
stored says so instead of showing a stale repr.
"""

from __future__ import annotations

import argparse
import base64
import html
import inspect
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Explorer", "explore", "freeze", "freeze_file", "main", "pre_save_hook"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

SPEC_HELP = (
    "an ipywidgets control, a bool (checkbox), a list of choices (dropdown), a range "
    "(integer slider) or a (min, max) / (min, max, step) tuple of numbers (slider)"
)


# ----------------------------------------------------------------------------- explorer


def _control(name: str, spec: Any) -> Any:
    """An ipywidgets control for ``spec`` (see :data:`SPEC_HELP`), labelled ``name``."""
    import ipywidgets as widgets

    if isinstance(spec, widgets.ValueWidget):
        if not getattr(spec, "description", None):
            spec.description = name
        return spec
    if isinstance(spec, bool):
        return widgets.Checkbox(value=spec, description=name, indent=False)
    if isinstance(spec, list) and spec:
        return widgets.Dropdown(options=spec, value=spec[0], description=name)
    if isinstance(spec, range) and len(spec):
        return widgets.IntSlider(
            value=spec.start, min=spec.start, max=spec[-1], step=spec.step, description=name,
            continuous_update=False,
        )  # fmt: skip
    numbers = isinstance(spec, tuple) and len(spec) in (2, 3)
    if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
        low, high = spec[0], spec[1]
        if low >= high:
            raise ValueError(f"control {name!r}: min {low} is not below max {high}")
        if all(isinstance(v, int) for v in spec):
            step = spec[2] if len(spec) == 3 else 1
            return widgets.IntSlider(
                value=low, min=low, max=high, step=step, description=name,
                continuous_update=False,
            )  # fmt: skip
        step = spec[2] if len(spec) == 3 else (high - low) / 20
        return widgets.FloatSlider(
            value=low, min=low, max=high, step=step, description=name, continuous_update=False
        )
    raise TypeError(f"control {name!r} is {spec!r}; give {SPEC_HELP}")


def _render(figure: Any, scale: float) -> tuple[bytes, int, int]:
    """PNG bytes of ``figure`` at ``scale`` times its dpi, and its size in CSS pixels."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise TypeError(
            f"the draw function returned {type(figure).__name__}; it must return the "
            "matplotlib Figure it drew (e.g. fig, ax = plt.subplots(); ...; return fig)"
        )
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=figure.dpi * scale, bbox_inches="tight")
    finally:
        plt.close(figure)  # else the inline backend shows it again at the end of the cell
    png = buffer.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return png, round(width / scale), round(height / scale)


def plain_text(controls: Sequence[str], title: str | None = None) -> str:
    """An explorer's plain-text form (what a text-only reader sees instead of a VBox repr)."""
    what = f"{title}: " if title else ""
    return (
        f"{what}an explorer over {', '.join(controls)}; the picture is its first view "
        "(run the cell to move the controls)"
    )


class Explorer:
    """A live explorer: controls over a picture, redrawn when a control changes.

    Displayed (as a cell's last value or with ``display``), its output holds the widget and,
    as a second representation of the same output, the PNG of its first view, shown where
    the widget cannot be.

    Attributes:
        controls: the ipywidgets controls by name (the draw function's keywords).
        picture: the ``ipywidgets.Image`` that shows the current view.
        widget: the whole ``ipywidgets.VBox`` (controls, a status line, the picture).
        first_view: PNG bytes of the picture drawn when the explorer was made.
    """

    def __init__(
        self,
        draw: Callable[..., Any],
        controls: Mapping[str, Any],
        *,
        per_row: int = 3,
        scale: float = 2.0,
        title: str | None = None,
    ) -> None:
        import ipywidgets as widgets

        self.draw = draw
        self.scale = scale
        self.controls = dict(controls)
        self.picture = widgets.Image(format="png")
        self.status = widgets.HTML("")
        names = list(self.controls)
        rows = [
            widgets.HBox([self.controls[n] for n in names[i : i + per_row]])
            for i in range(0, len(names), per_row)
        ]
        # flex-start: a VBox stretches its children to its width, which blew the picture up
        self.widget = widgets.VBox(
            [*rows, self.status, self.picture], layout=widgets.Layout(align_items="flex-start")
        )
        self.title = title
        self.first_view, self._first_size = self.redraw()
        for control in self.controls.values():
            control.observe(self._changed, names="value")

    @property
    def values(self) -> dict[str, Any]:
        """The controls' current values, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def redraw(self) -> tuple[bytes, tuple[int, int]]:
        """Draw the current view into the picture; returns its PNG and CSS size (w, h)."""
        import ipywidgets as widgets

        png, width, height = _render(self.draw(**self.values), self.scale)
        self.picture.value = png
        self.picture.layout = widgets.Layout(width=f"{width}px", max_width="100%", height="auto")
        return png, (width, height)

    def _changed(self, change: Any = None) -> None:
        # An error in a widget callback only reaches the browser's log: say it here.
        try:
            self.redraw()
            self.status.value = ""
        except Exception as error:
            self.status.value = (
                f"<span style='color:#b00020'>could not draw {html.escape(str(self.values))}: "
                f"{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>"
            )
            raise

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        data = dict(self.widget._repr_mimebundle_())
        data["text/plain"] = plain_text(list(self.controls), self.title)
        data["image/png"] = base64.b64encode(self.first_view).decode("ascii")
        width, height = self._first_size
        return data, {"image/png": {"width": width, "height": height}}


def _set(name: str, control: Any, value: Any) -> None:
    """Set a control's first value, refusing what it would silently clamp or reject."""
    low, high = getattr(control, "min", None), getattr(control, "max", None)
    inside = (
        low is None
        or high is None
        or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        )
    )
    try:
        if not inside:
            raise ValueError(f"outside [{low}, {high}]")
        control.value = value
    except Exception as error:
        raise ValueError(f"start value {value!r} does not fit control {name!r}: {error}") from None


def explore(
    draw: Callable[..., Any],
    controls: Mapping[str, Any],
    *,
    start: Mapping[str, Any] | None = None,
    per_row: int = 3,
    scale: float = 2.0,
    title: str | None = None,
) -> Explorer:
    """An explorer that calls ``draw(**values)`` whenever a control moves.

    Args:
        draw: keyword arguments named like ``controls``; returns the matplotlib Figure it
            drew (the explorer renders and closes it).
        controls: name -> an ipywidgets control or a spec: a bool (checkbox), a list of
            choices (dropdown), a range (integer slider), a ``(min, max)`` or
            ``(min, max, step)`` tuple (integer slider if all are ints, else a float
            slider). Sliders redraw when released. A control made from a spec starts at
            ``draw``'s default for that keyword (else at its first choice or its minimum);
            an ipywidgets control keeps its own value.
        start: values to start from, by control name, over the above.
        per_row: controls per row.
        scale: the picture's pixels per figure pixel (2: sharp on high-density screens);
            it is shown at the figure's size, ``figsize`` times ``dpi``.
        title: a label for the explorer's plain-text form.

    Returns:
        An :class:`Explorer`; display it (a cell's last value, or ``display(explorer)``).
    """
    import ipywidgets as widgets

    if not controls:
        raise ValueError("explore() needs at least one control, e.g. {'index': range(8)}")
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    built = {name: _control(name, spec) for name, spec in controls.items()}
    try:
        signature = inspect.signature(draw)
        signature.bind(**{name: None for name in built})
    except TypeError as error:
        raise TypeError(
            f"draw() must accept the controls {list(built)} as keywords: {error}"
        ) from None
    for name in start or {}:
        if name not in built:
            raise ValueError(f"start names {name!r}, which is no control; the controls: "
                             f"{list(built)}")  # fmt: skip
    # a control made from a spec starts where draw() would: at its default for that keyword
    first = {
        name: signature.parameters[name].default
        for name, spec in controls.items()
        if not isinstance(spec, widgets.ValueWidget)
        and name in signature.parameters
        and signature.parameters[name].default is not inspect.Parameter.empty
    }
    first.update(start or {})
    for name, value in first.items():
        _set(name, built[name], value)
    return Explorer(draw, built, per_row=per_row, scale=scale, title=title)


# ----------------------------------------------------------------------------- freezing


def _models(nb: Mapping[str, Any]) -> dict[str, Any]:
    return nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _ref(value: Any) -> str | None:
    """The model id in a state's reference to another widget (``"IPY_MODEL_<id>"``)."""
    prefix = "IPY_MODEL_"
    return value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else None


def _hidden(models: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    layout = models.get(_ref(model["state"].get("layout")) or "", {}).get("state", {})
    return layout.get("visibility") == "hidden" or layout.get("display") == "none"


def _bar_text(models: Mapping[str, Any], model_id: str) -> tuple[str, bool] | None:
    """tqdm.notebook's bar (HTML, progress, HTML in an HBox) as its final text, and visible?"""
    from tqdm.std import Bar

    model = models.get(model_id)
    if not model or model.get("model_name") != "HBoxModel":
        return None
    parts = [models.get(_ref(c) or "") for c in model["state"].get("children", [])]
    kinds = [p.get("model_name") if p else None for p in parts]
    if len(parts) != 3 or kinds[0] != "HTMLModel" or kinds[2] != "HTMLModel":
        return None
    if kinds[1] not in ("FloatProgressModel", "IntProgressModel"):
        return None

    def text(part: Mapping[str, Any]) -> str:
        return html.unescape(part["state"].get("value", "")).replace("\u2007", " ")

    bar = parts[1]["state"]
    low, high, value = bar.get("min", 0), bar.get("max", 0), bar.get("value", 0)
    frac = (value - low) / (high - low) if high > low else 0.0
    meter = format(Bar(min(max(frac, 0.0), 1.0), 10, charset=Bar.UTF), "")
    return f"{text(parts[0])}|{meter}|{text(parts[2])}", not _hidden(models, model)


def _first_image(models: Mapping[str, Any], model_id: str, depth: int = 0) -> bytes | None:
    """The PNG of the first Image widget in ``model_id``'s tree, from the stored state."""
    model = models.get(model_id)
    if not model or depth > 20:
        return None
    if model.get("model_name") == "ImageModel":
        for buffer in model.get("buffers", []):
            if buffer.get("path") == ["value"] and buffer.get("encoding") == "base64":
                return base64.b64decode(buffer["data"])
        return None
    for child in model["state"].get("children", []):
        found = _first_image(models, _ref(child) or "", depth + 1)
        if found is not None:
            return found
    return None


_TQDM_REPR = re.compile(r"^(?P<desc>.*?):?\s*\d+%\|")


def _unstored_text(plain: str) -> str:
    match = _TQDM_REPR.match(plain)
    if match:
        desc = match.group("desc").strip() or "a loop"
        return f"{desc}: a progress bar (its final state was not stored; run the cell to see it)"
    return "an interactive widget (its state was not stored; run the cell to use it)"


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def freeze(nb: dict[str, Any]) -> Counter[str]:
    """Replace the widget outputs of a notebook (nbformat 4 dict, changed in place).

    - an output that also holds a picture or other rich data (an :func:`explore` output)
      keeps that and loses the widget view;
    - a tqdm widget bar becomes a plain-text output of its final text, read from the
      stored widget state; a bar closed with ``leave=False`` (hidden) is removed;
    - another widget becomes the PNG of the first Image widget in it, if its state holds
      one, else a plain-text note that it was not stored;
    - the notebook's widget state (``metadata.widgets``) is removed.

    Returns:
        Counts of what was done: ``"explorer"``, ``"bar"``, ``"hidden bar"``,
        ``"picture"``, ``"unstored"``, ``"state"`` (1 if widget state was dropped).
    """
    models = _models(nb)
    done: Counter[str] = Counter()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            view = data.get(WIDGET_VIEW)
            if view is None:
                kept.append(output)
                continue
            model_id = view.get("model_id", "")
            if set(data) - {WIDGET_VIEW, "text/plain"}:
                data.pop(WIDGET_VIEW)
                output.get("metadata", {}).pop(WIDGET_VIEW, None)
                kept.append(output)
                done["explorer"] += 1
                continue
            bar = _bar_text(models, model_id)
            if bar is not None:
                text, visible = bar
                if visible:
                    kept.append(_plain({"text/plain": text}))
                    done["bar"] += 1
                else:
                    done["hidden bar"] += 1
                continue
            png = _first_image(models, model_id)
            if png is not None:
                encoded = base64.b64encode(png).decode("ascii")
                kept.append(_plain({"image/png": encoded, "text/plain": "<a picture>"}))
                done["picture"] += 1
                continue
            plain = "".join(data.get("text/plain", ""))
            kept.append(_plain({"text/plain": _unstored_text(plain)}))
            done["unstored"] += 1
        cell["outputs"] = kept
    if nb.get("metadata", {}).pop("widgets", None) is not None:
        done["state"] = 1
    return done


def freeze_file(path: str | Path) -> Counter[str]:
    """:func:`freeze` a notebook file in place (written only if something changed).

    Written as nbformat writes it (sorted keys, one-space indent), with or without the
    final newline the file had, so a frozen notebook's diff shows only the changed outputs.
    """
    import nbformat

    from .paths import atomic_write

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read notebook {path}: {error}") from None
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{path} is not a notebook (no 'cells')")
    done = freeze(nb)
    if done:
        out = nbformat.writes(nbformat.from_dict(nb)) + ("\n" if text.endswith("\n") else "")
        atomic_write(path, out.encode("utf-8"))
    return done


def pre_save_hook(model: dict[str, Any], **kwargs: Any) -> None:
    """Jupyter server's pre-save hook: a notebook is saved with its widget outputs frozen.

    Set by ``jupyter/jupyter_server_config.json`` (``make lab``), it makes what a person
    saves read like a committed notebook: reopened later, without the kernel that held the
    widgets, it shows final progress-bar text and the explorers' pictures instead of
    "Error displaying widget: model not found". The open session keeps its live widgets:
    only the file changes.

    Args:
        model: the contents model being saved; a notebook's ``content`` is replaced.
        **kwargs: ``path`` and ``contents_manager``, unused.
    """
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    content = json.loads(json.dumps(model["content"]))  # the save stays whole if freeze fails
    freeze(content)
    model["content"] = content


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m atcourse.widgets NOTEBOOK...``: freeze each notebook's widget outputs."""
    parser = argparse.ArgumentParser(
        prog="python -m atcourse.widgets",
        description="Replace widget outputs of executed notebooks by outputs that read "
        "without a kernel (final progress-bar text, an explorer's picture), and drop the "
        "stored widget state.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebook files, changed in place")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        done = freeze_file(path)
        summary = ", ".join(f"{n} {what}" for what, n in sorted(done.items())) or "nothing"
        print(f"{path}: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
