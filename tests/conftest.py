"""Shared fixtures: every test runs with its own data and runs folders.

No test reads or writes the real ``data/`` or ``runs/`` folders, and no environment
override set by a user (profile, device) leaks into a test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ATCOURSE_DATA`` and ``ATCOURSE_RUNS`` in the test's own temporary folder."""
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    for name in ("ATCOURSE_PROFILE", "ATCOURSE_DEVICE", "ATCOURSE_TEACHER_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def make_notebook() -> Callable[[Path, str, str], Path]:
    """A writer of two-cell notebooks: a ``parameters`` cell and a body cell."""

    def write(path: Path, params_src: str, body_src: str) -> Path:
        cells = [
            {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]},
             "source": params_src, "outputs": [], "execution_count": None},
            {"cell_type": "code", "id": "body", "metadata": {}, "source": body_src,
             "outputs": [], "execution_count": None},
        ]  # fmt: skip
        kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4,
              "nbformat_minor": 5}  # fmt: skip
        path.write_text(json.dumps(nb))
        return path

    return write
