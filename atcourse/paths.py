"""Every filesystem location the course uses, in one place.

- data root: ``$ATCOURSE_DATA``, else ``data/`` at the repository root (when the package
  runs from a checkout), else ``./data``. Data sets, their decoded caches and the
  teacher zoo's checkpoints live below it.
- runs root: ``$ATCOURSE_RUNS``, else ``runs/`` beside the data root's parent.

:func:`file_lock` makes concurrent use of these places safe: the zoo trains a teacher
once however many processes ask for it, and two processes never train one run at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["repo_root", "data_root", "runs_root", "checkpoint_root", "cache_root", "file_lock"]


def repo_root() -> Path | None:
    """The checkout the package runs from, or None for an installed copy."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "atcourse").is_dir():
        return here
    return None


def _base() -> Path:
    root = repo_root()
    return root if root is not None else Path.cwd()


def data_root() -> Path:
    """Where data sets and their caches live (``$ATCOURSE_DATA`` overrides)."""
    env = os.environ.get("ATCOURSE_DATA")
    return Path(env).expanduser().resolve() if env else _base() / "data"


def runs_root() -> Path:
    """Where run records, executed notebooks and run checkpoints go (``$ATCOURSE_RUNS``)."""
    env = os.environ.get("ATCOURSE_RUNS")
    return Path(env).expanduser().resolve() if env else _base() / "runs"


def checkpoint_root() -> Path:
    """The teacher zoo's checkpoints."""
    return data_root() / "checkpoints"


def cache_root() -> Path:
    """Decoded data sets (uint8 tensors) and generated ``shapes`` sets."""
    return data_root() / "cache"


@contextlib.contextmanager
def file_lock(path: str | Path, *, waiting: str | None = None) -> Iterator[None]:
    """An exclusive lock between processes on ``path`` (POSIX flock).

    Held until the block exits; the operating system releases it if the process dies. When
    another process holds it, ``waiting`` (if given) is printed before blocking, so a user
    sees why nothing moves. On systems without ``fcntl`` (Windows) it is a no-op: still
    correct for one process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
