"""Shared fixtures: every test runs with its own data and runs folders.

No test reads or writes the real ``data/`` or ``runs/`` folders, and no environment
override set by a user (profile, device) leaks into a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ATCOURSE_DATA`` and ``ATCOURSE_RUNS`` in the test's own temporary folder."""
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "runs"))
    for name in ("ATCOURSE_PROFILE", "ATCOURSE_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path
