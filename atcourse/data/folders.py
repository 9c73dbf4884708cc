"""Image-folder trees and ``.tar.gz`` archives of them, read into uint8 tensors.

Layouts: ``<root>/{train,test}/<class>/<image>`` (stored splits), or ``<root>/<class>/
<image>`` (all training images). Any folders may lie above (an archive usually holds one
top folder). Class names are sorted alphabetically and that order is the label order.

A tree is checked before anything is decoded: no images, a mix of the two layouts, a
class folder without images, a class with test images but no training ones, and a
requested split that the tree does not have each stop the load with a message naming the
tree and the fix. An archive that cannot be read to its end (truncated, a changed byte
caught by gzip's CRC, an unreadable tar header) names the archive and how to get a good
copy; an image that cannot be decoded is named with its archive (see
:mod:`atcourse.data.decode`).

Decoded splits are cached (:func:`atcourse.data.cache.cached_split`); the key covers the
tree's file count, total size and newest mtime, or the archive's size and mtime, so any
change to the source decodes it again.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from atcourse.data.cache import cached_split, file_signature, source_key, tree_signature
from atcourse.data.dataset import DamagedFileError, ImageDataset
from atcourse.data.decode import IMAGE_EXTENSIONS, decode_images, is_image_name

__all__ = ["ARCHIVE_SUFFIXES", "STORED_SPLITS", "dataset_from", "load_folder", "read_source"]

STORED_SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Archives below this size are gunzipped into memory first: tarfile walks an in-memory
# tar about 1.5x faster than a streaming gzip one.
_IN_MEMORY_ARCHIVE_BYTES = 1 << 30
_LAYOUTS = "train/<class>/<image> and test/<class>/<image>, or <class>/<image>"

Parts = tuple[str, ...]
Grouped = dict[str | None, list[tuple[str, Any]]]


# ----------------------------------------------------------------------------- listing


def _list_tree(path: Path) -> tuple[list[tuple[Parts, Path]], set[Parts]]:
    """Every image below ``path`` as (path parts, file), and every folder's parts."""
    entries, dirs = [], set()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(path).parts
        dirs.update((*rel, d) for d in dirnames)
        for fn in filenames:
            if is_image_name(fn):
                entries.append(((*rel, fn), Path(dirpath) / fn))
    return entries, dirs


def _parts(name: str) -> Parts:
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _list_archive(path: Path, advice: str) -> tuple[dict[str, bytes], set[Parts]]:
    """Every image member's bytes by member name, and every folder's parts.

    The archive is read to its very end, so gzip checks its CRC and a damaged tar
    header (after which tarfile would silently stop) shows as data past the last member.
    """
    blobs: dict[str, bytes] = {}
    dirs: set[Parts] = set()
    try:
        if path.stat().st_size < _IN_MEMORY_ARCHIVE_BYTES and path.name.endswith(("gz", "tgz")):
            with open(path, "rb") as f:
                tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read())), mode="r:")
        else:
            tf = tarfile.open(path, mode="r:*")
        with tf:
            for member in tf:
                parts = _parts(member.name)
                if member.isdir():
                    dirs.add(parts)
                elif member.isfile() and is_image_name(member.name):
                    dirs.update(parts[:k] for k in range(1, len(parts) - 1))
                    f = tf.extractfile(member)
                    if f is not None:
                        blobs[member.name] = f.read()
            while chunk := tf.fileobj.read(1 << 20):  # type: ignore[union-attr]
                if chunk.strip(b"\0"):
                    raise tarfile.ReadError("data follows an unreadable member header")
    except (PermissionError, FileNotFoundError):
        raise  # they name the archive already, and it is not damaged
    except (EOFError, OSError, zlib.error, tarfile.TarError) as err:
        raise DamagedFileError(_archive_message(path, err, advice), path) from err
    return blobs, dirs


def _archive_message(path: Path, err: BaseException, advice: str) -> str:
    text = str(err)
    if isinstance(err, EOFError) or "unexpected end" in text:
        problem = "its data ends too early (the file is truncated or damaged)"
    elif "CRC" in text:
        problem = "its checksum (CRC) does not match its content (bytes were changed)"
    elif isinstance(err, zlib.error | gzip.BadGzipFile):
        problem = "its compressed data is invalid"
    elif isinstance(err, tarfile.TarError):
        problem = "its tar structure is unreadable"
    else:
        problem = "it cannot be read"
    return (
        f"archive {path} is damaged: {problem} ({type(err).__name__}: {text}). It was "
        f"probably cut short or altered while being copied or downloaded. Get a good copy: "
        f"copy or download it again and compare its size and checksum (sha256sum) with the "
        f"original's{advice}."
    )


# ----------------------------------------------------------------------------- layout


def _group(
    entries: Iterable[tuple[Parts, Any]],
    dirs: set[Parts],
    where: str,
    describe: Callable[[Parts], str],
) -> Grouped:
    """Group ``(path parts, payload)`` by stored split into ``(class, payload)`` lists.

    Keys are ``"train"``/``"test"`` when every image sits at ``.../{train,test}/<class>/
    <file>``, else None (the class is the image's parent folder). Raises on no images, a
    mix of layouts, an empty class folder, or test classes missing from train.
    """
    items = [(parts, payload) for parts, payload in entries if len(parts) >= 2]
    if not items:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}: expected {_LAYOUTS} "
            f"inside it. Put the images there, or point folder: at the folder holding them."
        )
    in_split = [len(p) >= 3 and p[-3] in STORED_SPLITS for p, _ in items]
    if any(in_split) and not all(in_split):
        stray = [p for (p, _), ok in zip(items, in_split) if not ok]
        note = ""
        if any(set(p) & {"val", "valid", "validation"} for p in stray):
            note = " (a val/ folder is not read: validation images are held out of train/)"
        raise ValueError(
            f"{where} mixes layouts: its images sit at train/<class>/<image> or "
            f"test/<class>/<image>, except {len(stray)}, e.g. {describe(stray[0])}{note}. "
            f"Move those into a class folder of train/ or test/, or remove them."
        )
    class_dirs = {parts[:-1] for parts, _ in items}
    parents = {d[:-1] for d in class_dirs}
    for d in sorted(dirs):
        if d[-1].startswith(".") or d[-1] == "__MACOSX":
            continue  # hidden and macOS metadata folders are never classes
        if d[:-1] in parents and not any(c[: len(d)] == d for c in class_dirs):
            raise ValueError(
                f"class folder {describe(d)} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                f"add images of that class, or remove the folder."
            )
    grouped: Grouped = {}
    for parts, payload in items:
        grouped.setdefault(parts[-3] if in_split[0] else None, []).append((parts[-2], payload))
    if "train" in grouped and "test" in grouped:
        lost = sorted({c for c, _ in grouped["test"]} - {c for c, _ in grouped["train"]})
        if lost:
            raise ValueError(
                f"{where}: class(es) {lost} have test images but no training images: add "
                f"train/<class>/ images for them, or remove their test/ folders."
            )
    return grouped


def _require(grouped: Grouped, wanted: Sequence[str], where: str) -> None:
    """Raise ValueError when a stored split in ``wanted`` is not in the tree."""
    have = ["train"] if None in grouped else sorted(k for k in grouped if k is not None)
    for split in wanted:
        if split in have:
            continue
        if None in grouped:
            raise ValueError(
                f"{where} has no {split!r} split: its images sit at <class>/<image>, so all "
                f"are training images. Arrange them as train/<class>/... and "
                f"test/<class>/... to have a test split, or use the splits 'train' and 'val' "
                f"only (val is held out of the training images)."
            )
        fix = (
            "with images kept apart for the final score, or use only the splits 'train' and "
            "'val' (val is held out of train/)."
            if split == "test"
            else "with the training images."
        )
        found = ", ".join(h + "/" for h in have)
        raise ValueError(
            f"{where} has no {split}/ folder (found only {found}): add {split}/<class>/<image> "
            f"{fix}"
        )


def _decode_groups(
    grouped: Grouped,
    read: Callable[[Any], bytes],
    name_of: Callable[[Any], str],
    image_size: int | None,
    fix: str,
) -> dict[str, dict[str, Any]]:
    classes = sorted({c for items in grouped.values() for c, _ in items})
    index = {c: k for k, c in enumerate(classes)}
    # Decode every split in one call so a tree whose splits differ in size still ends
    # up with one common image size.
    payloads: list[Any] = []
    bounds: dict[str, tuple[int, int, torch.Tensor]] = {}
    for key in sorted(grouped, key=str):
        # Sort by class then payload name so the order never depends on the file system.
        ordered = sorted(grouped[key], key=lambda it: (index[it[0]], str(it[1])))
        labels = torch.tensor([index[c] for c, _ in ordered], dtype=torch.long)
        start = len(payloads)
        payloads.extend(p for _, p in ordered)
        bounds["train" if key is None else key] = (start, len(payloads), labels)
    names = [name_of(p) for p in payloads]
    images = decode_images([read(p) for p in payloads], names, image_size, fix=fix)
    return {
        key: {"images": images[a:b].clone(), "labels": labels, "classes": classes}
        for key, (a, b, labels) in bounds.items()
    }


def read_source(
    path: Path, image_size: int | None, wanted: Sequence[str], advice: str = ""
) -> dict[str, dict[str, Any]]:
    """Decode a tree or archive: ``{split: {"images", "labels", "classes"}}``.

    ``wanted``: stored splits that must exist (else ValueError naming the fix).
    ``advice`` ends the message about a damaged archive (another way to get the data).
    """
    if path.is_dir():
        entries, dirs = _list_tree(path)
        grouped = _group(entries, dirs, str(path), lambda parts: str(path.joinpath(*parts)))
        _require(grouped, wanted, str(path))
        return _decode_groups(
            grouped, Path.read_bytes, str, image_size, "Remove it or replace it with a good copy."
        )
    blobs, dirs = _list_archive(path, advice)
    where = f"archive {path}"
    grouped = _group(
        ((_parts(name), name) for name in blobs),
        dirs,
        where,
        lambda parts: f"{'/'.join(parts)} in {where}",
    )
    _require(grouped, wanted, where)
    fix = (
        "Get a good copy of the archive, or unpack it, remove or replace that file, and "
        "pack it again."
    )
    return _decode_groups(grouped, blobs.__getitem__, lambda n: f"{n} in {where}", image_size, fix)


# ----------------------------------------------------------------------------- loading


def _is_archive(path: Path) -> bool:
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def dataset_from(name: str, split: str, payload: dict[str, Any]) -> ImageDataset:
    """An :class:`ImageDataset` without masks from a cached payload."""
    return ImageDataset(
        name=name,
        split=split,
        images=payload["images"],
        labels=payload["labels"],
        masks=None,
        classes=list(payload["classes"]),
        mean=tuple(payload["mean"]),  # type: ignore[arg-type]
        std=tuple(payload["std"]),  # type: ignore[arg-type]
    )


def load_folder(
    path: str | Path,
    split: str = "train",
    image_size: int | None = None,
) -> ImageDataset:
    """One stored split (``"train"`` or ``"test"``) of an image-folder tree or archive.

    Layouts: ``<path>/{train,test}/<class>/<image>``, or ``<path>/<class>/<image>``
    without splits, where ``split="train"`` takes everything and ``"test"`` raises
    ValueError. The stored train split is returned whole: ``load_dataset`` holds the
    validation split out of it. Images keep their size when all share one and
    ``image_size`` is None; otherwise every image is resized (shorter side) and
    center-cropped to ``image_size`` (default 32). Returns images uint8 ``[N, 3, H, W]``,
    labels int64 ``[N]``, no masks; the data set's name is ``"folder:<path>"``.
    """
    if split not in STORED_SPLITS:
        raise ValueError(f"load_folder reads the stored splits 'train' and 'test', got {split!r}")
    p = Path(path).expanduser()
    name = f"folder:{path}"
    if p.is_dir():
        key = source_key("folder", image_size, *tree_signature(p))
    elif p.is_file() and _is_archive(p):
        key = source_key("folder", image_size, *file_signature(p))
    elif p.is_file():
        # An image at <root>/<split>/<class>/x or <root>/<class>/x: suggest <root>.
        root = p.parent.parent.parent if p.parent.parent.name in STORED_SPLITS else p.parent.parent
        raise NotADirectoryError(
            f"{name}: {p} is a file, not a folder: folder: takes an image-folder tree "
            f"({_LAYOUTS}) or a .tar.gz archive of one. Give the folder that holds them, "
            f"e.g. folder:{root}"
        )
    else:
        raise FileNotFoundError(
            f"{name}: {p} does not exist. Give the path of an image-folder tree ({_LAYOUTS}) "
            f"or of a .tar.gz archive of one."
        )
    payload = cached_split("folders", key, split, lambda: read_source(p, image_size, (split,)))
    return dataset_from(name, split, payload)
