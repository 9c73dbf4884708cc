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
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "repo_root", "data_root", "runs_root", "checkpoint_root", "cache_root", "file_lock",
    "atomic_write", "digest_path", "verify_digest", "CorruptFileError", "make_dirs",
    "FolderError",
]  # fmt: skip


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


class FolderError(OSError):
    """A folder the course needs cannot be created or written; the message says how to fix it."""


def make_dirs(path: str | Path) -> Path:
    """Create ``path`` and its parents; a :class:`FolderError` naming the fix if it cannot."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise FolderError(
            f"cannot create the folder {path}: {exc.filename or path} is a file, not a folder. "
            + _where_hint(path)
        ) from exc
    except PermissionError as exc:
        raise FolderError(f"cannot create the folder {path}: permission denied. "
                          + _where_hint(path)) from exc  # fmt: skip
    return path


def _where_hint(path: Path) -> str:
    for root, variable in ((runs_root(), "ATCOURSE_RUNS"), (data_root(), "ATCOURSE_DATA")):
        if path == root or root in path.parents:
            return (f"Set {variable} to a writable folder (it is {root}); `atcourse doctor` "
                    "checks it.")  # fmt: skip
    return "Choose a writable folder."


@contextlib.contextmanager
def file_lock(path: str | Path, *, waiting: str | None = None) -> Iterator[None]:
    """An exclusive lock between processes on ``path`` (POSIX flock).

    Held until the block exits; the operating system releases it if the process dies. When
    another process holds it, ``waiting`` (if given) is printed before blocking, so a user
    sees why nothing moves. On systems without ``fcntl`` (Windows) it is a no-op: still
    correct for one process.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fh = open(path, "a")  # noqa: SIM115 - held for the whole block below
    except PermissionError as exc:
        raise FolderError(f"cannot open the lock file {path}: permission denied. "
                          + _where_hint(path.parent)) from exc  # fmt: skip
    with fh:
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


class CorruptFileError(ValueError):
    """A file the course wrote no longer matches the digest stored beside it."""


def digest_path(path: str | Path) -> Path:
    """Where the digest of ``path`` is kept: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_digest(path: str | Path) -> None:
    """Check ``path`` against its stored digest (no digest stored: nothing to check).

    Raises:
        CorruptFileError: naming the file, when its size or SHA-256 differ from the digest
            written with it (a truncated copy, flipped bytes, a half-finished download).
    """
    path = Path(path)
    stored = digest_path(path)
    if not stored.exists():
        return
    try:
        size_text, expected = stored.read_text().split()
        size = int(size_text)
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{stored} (the digest of {path}) is unreadable: {exc}") from exc
    actual_size = path.stat().st_size
    if actual_size != size:
        raise CorruptFileError(f"{path} has {actual_size} bytes, {size} were written")
    if _sha256(path) != expected:
        raise CorruptFileError(f"{path} does not match the SHA-256 written with it")


def atomic_write(
    path: str | Path,
    content: bytes | str | Callable[[BinaryIO], None],
    *,
    digest: bool = False,
) -> Path:
    """Write a file so that no reader ever sees it half-written: the one atomic writer.

    ``content`` (bytes, text as UTF-8, or a function that writes into a binary file, such
    as ``lambda fh: torch.save(obj, fh)``) goes into a unique temporary file in the same
    folder, is flushed to disk, and the temporary file is renamed over ``path``. A crash
    mid-write leaves the previous file intact and no temporary file behind; two writers
    never share a temporary file. The file is readable by everyone (mode 0644), as records
    and caches are meant to be. With ``digest``, its size and SHA-256 are written beside it
    (:func:`digest_path`), for :func:`verify_digest` to check when it is read back.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:
        raise FolderError(f"cannot write {path}: permission denied. "
                          + _where_hint(path.parent)) from exc  # fmt: skip
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        if digest:
            # the digest first: a crash between the two renames leaves a digest that no
            # longer matches, which reads as "corrupt", never as silently valid
            text = f"{os.path.getsize(tmp)} {_sha256(Path(tmp))}\n"
            atomic_write(digest_path(path), text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
