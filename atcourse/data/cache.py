"""Cache files of decoded and generated data sets, each carrying its own integrity check.

Decoding the 60,000-JPEG CIFAR-10 archive takes seconds; reading its cache, a fraction
of one. A cache file is ``torch.save`` of ``{"format", "sha256", "content"}``: the
digest covers every value of ``content`` (a tensor's dtype, shape and bytes), so a
flipped byte in the pixels is caught, and a truncated file cannot be unpickled at all.
:func:`read_cache` returns None for a missing file, and None with a one-line
:class:`CacheWarning` naming a damaged one, which the caller then rebuilds. Checking the
50,000-image CIFAR-10 train cache (150 MB) costs a sha256 pass over it, run on up to
four threads.

Files are written with :func:`atcourse.paths.atomic_write`, so a reader never sees a
half-written one.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from atcourse.data.dataset import channel_stats
from atcourse.paths import atomic_write, cache_root

__all__ = [
    "CACHE_FORMAT",
    "CacheWarning",
    "cached_split",
    "content_digest",
    "file_signature",
    "read_cache",
    "source_key",
    "tree_signature",
    "write_cache",
]

# Layout of a cache file; a file of another layout is rebuilt.
CACHE_FORMAT = "atcourse-cache-1"
# Part of every decoded-source key: bump when the decoding itself changes.
_DECODE_VERSION = "img-v1"
# Tensors are hashed in chunks of this many bytes, on several threads (sha256 releases
# the GIL); the digest of a tensor is the sha256 of its chunks' digests, so it does not
# depend on how many threads ran.
_CHUNK_BYTES = 1 << 23


class CacheWarning(UserWarning):
    """A cache file was damaged or outdated and is being rebuilt."""


def _tensor_digest(t: torch.Tensor) -> bytes:
    data = memoryview(t.detach().cpu().contiguous().numpy()).cast("B")
    chunks = [data[i : i + _CHUNK_BYTES] for i in range(0, len(data), _CHUNK_BYTES)]
    if len(chunks) <= 1:
        return hashlib.sha256(hashlib.sha256(data).digest()).digest()
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(lambda c: hashlib.sha256(c).digest(), chunks))
    return hashlib.sha256(b"".join(parts)).digest()


def content_digest(content: Mapping[str, Any]) -> str:
    """sha256 (hex) of a flat mapping of tensors and plain values (str, numbers, lists)."""
    h = hashlib.sha256()
    for key in sorted(content):
        value = content[key]
        h.update(f"{key}\x1f".encode())
        if isinstance(value, torch.Tensor):
            h.update(f"{value.dtype}\x1f{tuple(value.shape)}\x1f".encode())
            h.update(_tensor_digest(value))
        else:
            h.update(repr(value).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def write_cache(path: Path, content: Mapping[str, Any]) -> Path:
    """Save ``content`` (tensors and plain values) with its digest, atomically."""
    record = {"format": CACHE_FORMAT, "sha256": content_digest(content), "content": dict(content)}
    return atomic_write(path, lambda fh: torch.save(record, fh))


def read_cache(path: Path) -> dict[str, Any] | None:
    """The content of a cache file; None when it is missing or fails its check.

    A file that cannot be unpickled (truncated, torn), has another layout, or whose
    content no longer matches its stored digest gives a :class:`CacheWarning` naming it
    and None: the caller rebuilds it and overwrites the file.
    """
    if not path.is_file():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # The first sentence only: torch's zip errors run on over several.
        reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
        _warn(path, f"is unreadable, probably truncated ({type(err).__name__}: {reason})")
        return None
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
        _warn(path, "has no integrity check (written by an older atcourse)")
        return None
    content = record.get("content")
    if not isinstance(content, dict) or content_digest(content) != record.get("sha256"):
        _warn(path, "fails its integrity check (its content no longer matches its sha256)")
        return None
    return content


def _warn(path: Path, problem: str) -> None:
    warnings.warn(f"cache {path} {problem}; rebuilding it", CacheWarning, stacklevel=3)


def source_key(*parts: object) -> str:
    """A short stable key for a decoded source, from its description and signature."""
    text = "\x1f".join(map(str, (_DECODE_VERSION, *parts)))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def file_signature(path: Path) -> tuple[str, int, int]:
    """Path, size and mtime of a file: a changed file gets a new cache key."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def tree_signature(path: Path) -> tuple[str, int, int, int]:
    """Path, file count, total size and newest mtime of every file below ``path``."""
    count = total = newest = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    st = entry.stat()
                    count += 1
                    total += st.st_size
                    newest = max(newest, st.st_mtime_ns)
    return str(path.resolve()), count, total, newest


def cached_split(
    kind: str, key: str, split: str, build: Callable[[], dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """One stored split of one decoded source, from the cache or from ``build()``.

    ``build`` returns ``{split: {"images", "labels", "classes"}}`` for every split the
    source stores; the train split's channel statistics are added to each before
    caching. Each file lists every split of its source, so a crash between writing two
    files is noticed. Only the files that are missing or failed their check are written:
    a good file next to a damaged one is left as it is. Raises KeyError when the source
    has no such split.
    """
    folder = cache_root() / kind / key
    cached = read_cache(folder / f"{split}.pt")
    if cached is not None and all(
        (folder / f"{s}.pt").is_file() for s in cached.get("splits", ("<none>",))
    ):
        return cached
    splits = build()
    stats_from = splits["train"] if "train" in splits else next(iter(splits.values()))
    mean, std = channel_stats(stats_from["images"])
    for name, payload in splits.items():
        payload["mean"], payload["std"] = mean, std
        payload["splits"] = sorted(splits)
        path = folder / f"{name}.pt"
        if (name == split and cached is None) or not path.is_file():
            write_cache(path, payload)
    if cached is not None:
        return cached
    return splits[split]
