"""Progress bars whose stored output reads correctly without a kernel.

One factory, :func:`progress_bar`, for every bar the package shows (training, the zoo, the
benchmark, the notebooks' own loops). It returns a ``tqdm`` object, so callers use the usual
``update``, ``set_postfix``, ``set_description`` and ``close``; only the drawing differs:

- in a terminal (``atcourse train``, pytest): tqdm's ordinary text bar on stderr;
- in a Jupyter kernel: the same text bar, shown as a plain-text output and redrawn in place
  through an IPython display handle (``update_display_data``).

Why not ``tqdm.auto``'s widget bar: a widget output is stored as the widget's text repr at
its creation (``0%| | 0/936``) plus a model id. Without a live kernel, or after a save that
did not keep the widget state, a reader sees "0%" or "Error displaying widget: model not
found" on a run that finished. A display handle needs no widget manager: JupyterLab,
papermill, nbval and nbconvert all replace the output in place, so the saved notebook holds
the bar's last text (``100%|██████████| 936/936 [05:52<00:00, 2.70step/s, loss=0.696]``),
which renders anywhere, GitHub and nbviewer included.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm as _TerminalBar

__all__ = ["NotebookBar", "in_notebook", "progress_bar"]


def in_notebook() -> bool:
    """True when running inside a Jupyter kernel (JupyterLab, papermill, nbval, nbconvert)."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Discard:
    """A file that drops what tqdm writes: the bar is drawn through the display handle."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class NotebookBar(_TerminalBar):
    """tqdm's text bar drawn as one plain-text output, updated in place by display id.

    Redrawn at most every ``mininterval`` seconds (default 0.5 s here) and once more by
    ``close()``, so the stored output is the bar's final state. ``leave=False`` empties the
    output when the bar closes, as the terminal bar erases its line.
    """

    # tqdm's monitor thread would redraw from outside the cell's execution, where the
    # display message no longer belongs to the cell
    monitor_interval = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handle: Any = None
        kwargs.setdefault("mininterval", 0.5)
        kwargs["file"] = _Discard()
        kwargs["dynamic_ncols"] = False  # a text output has no terminal width to follow
        kwargs.setdefault("ascii", False)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        from IPython.display import display as show

        text = self.__str__() if msg is None else msg
        data = {"text/plain": text}
        if self._handle is None:
            self._handle = show(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)
        return True


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str | None = None,
    total: float | None = None,
    initial: float = 0,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    **options: Any,
) -> _TerminalBar:
    """A progress bar: a text bar redrawn in place in a notebook, tqdm's bar elsewhere.

    Args:
        iterable: wrap it, as ``tqdm(iterable)`` does (the bar counts its items).
        desc: the label before the bar (a run's name, ``"alignment"``).
        total: the expected count; taken from ``len(iterable)`` when None.
        initial: the count already done (a resumed run).
        unit: what is counted (``"step"``).
        disable: show nothing (the object still counts).
        leave: keep the bar when it closes (False: remove it).
        **options: any other ``tqdm`` argument (``mininterval``, ``postfix``,
            ``dynamic_ncols`` ...); in a notebook ``dynamic_ncols`` and ``file`` are ignored.

    Returns:
        A ``tqdm.std.tqdm`` (:class:`NotebookBar` inside a Jupyter kernel).
    """
    cls = NotebookBar if in_notebook() else _TerminalBar
    return cls(
        iterable, desc=desc, total=total, initial=initial, unit=unit, disable=disable,
        leave=leave, **options,
    )  # fmt: skip
