"""Image data sets held in memory as uint8 tensors: CIFAR-10/100 and image-folder trees.

Everything decodes once into ``uint8 [N, 3, H, W]`` tensors and is cached under
``cache_root()``; later loads read the cache (about 0.1 s for the 50,000-image CIFAR-10
train split).

CIFAR is looked for under the data root in this order:

1. torchvision's python format: ``cifar-10-batches-py/`` or ``cifar-100-python/``;
2. an image-folder tree: ``cifar10/{train,test}/<class>/*.png|jpg``;
3. an archive of such a tree: ``$ATCOURSE_CIFAR10_ARCHIVE`` (``..._CIFAR100_...``), else
   ``cifar10*.tar.gz`` (``cifar100*.tar.gz``) in the data root; the tree may sit under one
   top folder inside the archive;
4. with ``download=True``: torchvision's downloader, which writes format 1.

The first load of the 60,000-JPEG CIFAR-10 archive takes about 9 s on 2 CPU cores, of
which about 2.5 s is walking the tar and 2.5 s decoding: JPEGs go through
``torchvision.io.decode_jpeg`` in batches, about 3x faster than Pillow (other formats
through Pillow).

Class names are sorted alphabetically and that order is the label order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from atcourse.paths import cache_root, data_root

__all__ = [
    "ImageDataset",
    "IMAGE_EXTENSIONS",
    "atomic_save",
    "balanced_subset_indices",
    "channel_stats",
    "load_cifar",
    "load_folder",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
SPLITS = ("train", "test")
# Bump when the decoded cache layout or the decoding itself changes.
_CACHE_VERSION = "img-v1"
# Archives below this size are gunzipped into memory first: tarfile walks an in-memory
# tar about 1.5x faster than a streaming gzip one.
_IN_MEMORY_ARCHIVE_BYTES = 1 << 30

_CIFAR = {
    "cifar10": {
        "pickle_dir": "cifar-10-batches-py",
        "train_files": [f"data_batch_{i}" for i in range(1, 6)],
        "test_files": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "label_key": "labels",
        "env": "ATCOURSE_CIFAR10_ARCHIVE",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "pickle_dir": "cifar-100-python",
        "train_files": ["train"],
        "test_files": ["test"],
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
        "env": "ATCOURSE_CIFAR100_ARCHIVE",
        "torchvision": "CIFAR100",
    },
}


@dataclass
class ImageDataset:
    """A labelled image set held in memory.

    Attributes:
        name: data set name as given to ``load_dataset`` (``"shapes"``, ``"cifar10"``...).
        split: ``"train"`` or ``"test"``.
        images: uint8 ``[N, 3, H, W]``.
        labels: int64 ``[N]``, indices into ``classes``.
        masks: bool ``[N, H, W]`` marking the class-defining object's pixels, or None
            where the data set has no such ground truth.
        classes: class names; label ``k`` is ``classes[k]``.
        mean, std: per-channel statistics of the train split in [0, 1] units, used to
            normalize both splits identically.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """A new data set holding the given samples (in that order), same stats and classes."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            masks=None if self.masks is None else self.masks[idx],
        )

    def select_classes(self, classes: Sequence[int]) -> ImageDataset:
        """The samples of some classes only, relabelled ``0 .. len(classes) - 1`` in that order.

        For a task made of part of a data set (pre-training on some classes, transferring to
        the others): ``classes=(5, 6)`` keeps classes 5 and 6 as labels 0 and 1, with their
        names. Order within the set and the normalization statistics are kept; the name
        becomes ``"<name>[5,6]"``, which run records keep as the task trained on.
        """
        wanted = [int(c) for c in classes]
        if not wanted or len(set(wanted)) != len(wanted):
            raise ValueError(f"classes must be distinct class indices, got {list(classes)}")
        bad = [c for c in wanted if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(
                f"class indices {bad} are out of range: {self.name} has {self.num_classes} "
                f"classes (0..{self.num_classes - 1})"
            )
        relabel = torch.full((self.num_classes,), -1, dtype=torch.long)
        relabel[torch.tensor(wanted)] = torch.arange(len(wanted))
        keep = (relabel[self.labels] >= 0).nonzero().flatten()
        subset = self.subset(keep)
        return replace(
            subset,
            name=f"{self.name}[{','.join(map(str, wanted))}]",  # another task: say which
            labels=relabel[subset.labels],
            classes=[self.classes[c] for c in wanted],
        )

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"size={h}x{w}, classes={self.num_classes}, masks={self.masks is not None})"
        )


# ----------------------------------------------------------------------------- helpers


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``.

    A crash or a concurrent reader never sees a half-written cache file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cache(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # An unreadable cache (older torch, disk trouble) is rebuilt rather than fatal.
        return None


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``[N, 3, H, W]``, in [0, 1] units."""
    n = images.shape[0]
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    # Chunked float32 sums (exact enough per chunk), accumulated in float64: several times
    # faster than reducing uint8 or float64 tensors, and never a full float copy.
    for start in range(0, n, 4096):
        x = images[start : start + 4096].float()
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += (x * x).sum(dim=(0, 2, 3)).double()
    total, total_sq = total / 255.0, total_sq / 255.0**2
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def balanced_subset_indices(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of a deterministic, class-balanced subset of ``size`` samples.

    Every class gets ``size // C`` samples (the remainder goes to randomly chosen
    classes); a class with too few samples gives all it has and the others fill the
    gap. Returns int64 ``[size]``, sorted, so the subset keeps the original order.
    """
    n = int(labels.shape[0])
    if size >= n:
        return torch.arange(n)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    g = torch.Generator().manual_seed(int(seed))
    classes = torch.unique(labels)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    quota = torch.full((len(classes),), size // len(classes), dtype=torch.long)
    quota[torch.randperm(len(classes), generator=g)[: size % len(classes)]] += 1
    available = torch.tensor([len(idx) for idx in per_class])
    quota = torch.minimum(quota, available)
    # Hand the shortfall of small classes to those with samples left, one at a time.
    while int(quota.sum()) < size:
        room = torch.nonzero(quota < available).flatten()
        pick = room[torch.randperm(len(room), generator=g)[: size - int(quota.sum())]]
        quota[pick] += 1
    chosen = torch.cat([idx[: int(q)] for idx, q in zip(per_class, quota, strict=True)])
    return chosen.sort().values


def _source_key(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, (_CACHE_VERSION, *parts))).encode()).hexdigest()[:16]


def _file_signature(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _tree_signature(path: Path) -> tuple[str, int, int, int]:
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


# ----------------------------------------------------------------------------- decoding


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    # Skip hidden files such as macOS "._x.jpg" resource forks shipped in archives.
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _resize_center_crop(img: Any, size: int) -> Any:
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _decode_jpeg_batch(blobs: list[bytes]) -> list[torch.Tensor] | None:
    """Decode JPEGs with torchvision (``[3, H, W]`` uint8 each); None when it cannot."""
    with warnings.catch_warnings():
        # torchvision announces a future move of its decoders; they still work.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import ImageReadMode, decode_jpeg

            tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB))
        except (ImportError, AttributeError, RuntimeError):
            return None  # no such decoder or an odd JPEG variant: Pillow copes


def _decode_all(blobs: list[bytes], image_size: int | None) -> torch.Tensor:
    """Decode encoded images to uint8 ``[N, 3, H, W]``.

    All images keep their size when they share one and ``image_size`` is None; otherwise
    each is resized (shorter side) and center-cropped to ``image_size`` (32 when None).
    """
    from PIL import Image

    decoded: list[torch.Tensor | None] = [None] * len(blobs)
    jpeg_idx = [i for i, b in enumerate(blobs) if b[:3] == b"\xff\xd8\xff"]
    # Batched libjpeg-turbo decoding is the fast path for JPEG trees such as CIFAR.
    for start in range(0, len(jpeg_idx), 4096):
        chunk = jpeg_idx[start : start + 4096]
        out = _decode_jpeg_batch([blobs[i] for i in chunk])
        if out is None:
            continue  # this chunk goes through Pillow below
        for i, t in zip(chunk, out, strict=True):
            decoded[i] = t
    for i, blob in enumerate(blobs):
        if decoded[i] is None:
            with Image.open(io.BytesIO(blob)) as img:
                arr = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
                decoded[i] = arr.view(img.size[1], img.size[0], 3).permute(2, 0, 1)
    if not decoded:
        return torch.empty(0, 3, image_size or 32, image_size or 32, dtype=torch.uint8)
    sizes = {tuple(t.shape[1:]) for t in decoded}  # type: ignore[union-attr]
    if len(sizes) == 1 and (image_size is None or sizes == {(image_size, image_size)}):
        return torch.stack(decoded)  # type: ignore[arg-type]
    target = image_size or 32
    out_list = []
    for t in decoded:
        assert t is not None
        if tuple(t.shape[1:]) != (target, target):
            img = Image.fromarray(t.permute(1, 2, 0).contiguous().numpy())
            img = _resize_center_crop(img, target)
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            t = t.view(target, target, 3).permute(2, 0, 1)
        out_list.append(t)
    return torch.stack(out_list)


def _split_entries(
    entries: Iterable[tuple[tuple[str, ...], Any]], where: str
) -> dict[str | None, list[tuple[str, Any]]]:
    """Group ``(path parts, payload)`` by split into ``(class, payload)`` lists.

    A tree is split when every image sits at ``.../{train,test}/<class>/<file>``; then the
    keys are ``"train"``/``"test"``. Otherwise the key is None and the class is the
    image's parent folder. Works whatever folders lie above (one top folder in archives).
    """
    items = [(parts, payload) for parts, payload in entries if len(parts) >= 2]
    if not items:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {where}")
    split_layout = all(len(p) >= 3 and p[-3] in SPLITS for p, _ in items)
    grouped: dict[str | None, list[tuple[str, Any]]] = {}
    for parts, payload in items:
        key = parts[-3] if split_layout else None
        grouped.setdefault(key, []).append((parts[-2], payload))
    return grouped


def _labelled(items: list[tuple[str, Any]], classes: list[str]) -> tuple[list[Any], torch.Tensor]:
    index = {c: k for k, c in enumerate(classes)}
    # Sort by class then payload name so the order never depends on the file system.
    items = sorted(items, key=lambda it: (index[it[0]], str(it[1])))
    labels = torch.tensor([index[c] for c, _ in items], dtype=torch.long)
    return [p for _, p in items], labels


def _read_tree(path: Path, image_size: int | None) -> dict[str | None, dict[str, Any]]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(path).parts
        for fn in filenames:
            if _is_image_name(fn):
                entries.append(((*rel, fn), Path(dirpath) / fn))
    grouped = _split_entries(entries, str(path))
    return _decode_groups(grouped, lambda p: p.read_bytes(), image_size)


def _read_archive(path: Path, image_size: int | None) -> dict[str | None, dict[str, Any]]:
    if path.stat().st_size < _IN_MEMORY_ARCHIVE_BYTES and path.name.endswith(("gz", "tgz")):
        with open(path, "rb") as f:
            tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read())), mode="r:")
    else:
        tf = tarfile.open(path, mode="r:*")
    blobs: dict[str, bytes] = {}
    with tf:
        for member in tf:
            if member.isfile() and _is_image_name(member.name):
                f = tf.extractfile(member)
                if f is not None:
                    blobs[member.name] = f.read()
    entries = [(tuple(p for p in name.split("/") if p not in ("", ".")), name) for name in blobs]
    grouped = _split_entries(entries, str(path))
    return _decode_groups(grouped, blobs.__getitem__, image_size)


def _decode_groups(
    grouped: dict[str | None, list[tuple[str, Any]]],
    read: Any,
    image_size: int | None,
) -> dict[str | None, dict[str, Any]]:
    classes = sorted({c for items in grouped.values() for c, _ in items})
    # Decode every split in one call so a tree whose splits differ in size still ends
    # up with one common image size.
    payloads: list[Any] = []
    bounds: dict[str | None, tuple[int, int, torch.Tensor]] = {}
    for key in sorted(grouped, key=str):
        ordered, labels = _labelled(grouped[key], classes)
        bounds[key] = (len(payloads), len(payloads) + len(ordered), labels)
        payloads.extend(ordered)
    images = _decode_all([read(p) for p in payloads], image_size)
    return {
        key: {"images": images[a:b].clone(), "labels": labels, "classes": classes}
        for key, (a, b, labels) in bounds.items()
    }


# ----------------------------------------------------------------------------- caching


def _cached_split(kind: str, key: str, split: str, build: Any) -> dict[str, Any]:
    """One split of one source, from the cache or from ``build()`` (then cached).

    ``build`` returns ``{split: {"images", "labels", "classes"}}`` for every split the
    source has; the train split's channel statistics are added to each before caching.
    Raises KeyError when the source has no such split.
    """
    folder = cache_root() / kind / key
    cached = _load_cache(folder / f"{split}.pt")
    # Each file lists every split of its source, so a crash between writing two files
    # is noticed and the source decoded again.
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
        atomic_save(payload, folder / f"{name}.pt")
    return splits[split]


def _dataset(name: str, split: str, payload: dict[str, Any]) -> ImageDataset:
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


# ----------------------------------------------------------------------------- CIFAR


def _read_cifar_pickles(directory: Path, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def unpickle(p: Path) -> dict[str, Any]:
        with open(p, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}

    meta_file, meta_key = spec["meta"]
    names = [
        n.decode() if isinstance(n, bytes) else n for n in unpickle(directory / meta_file)[meta_key]
    ]
    classes = sorted(names)
    # torchvision's order is already alphabetical; remap anyway so the rule always holds.
    remap = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
    out = {}
    for split in SPLITS:
        chunks, labels = [], []
        for fn in spec[f"{split}_files"]:
            batch = unpickle(directory / fn)
            data = batch["data"]
            chunks.append(torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[spec["label_key"]], dtype=torch.long))
        out[split] = {
            "images": torch.cat(chunks),
            "labels": remap[torch.cat(labels)],
            "classes": classes,
        }
    return out


def _archive_candidates(name: str, root: Path) -> tuple[list[Path], list[str]]:
    """Existing archives for ``name`` in search order, and a description of each place."""
    spec = _CIFAR[name]
    looked, found = [], []
    env = os.environ.get(spec["env"])
    if env:
        p = Path(env).expanduser()
        looked.append(f"${spec['env']} = {p}" + ("" if p.is_file() else " (no such file)"))
        if p.is_file():
            found.append(p)
    else:
        looked.append(f"${spec['env']} (not set)")
    looked.append(str(root / f"{name}*.tar.gz"))
    if root.is_dir():
        for p in sorted(root.glob(f"{name}*.tar.gz")):
            # "cifar10*" would also match CIFAR-100 archives.
            if name == "cifar10" and p.name.startswith("cifar100"):
                continue
            found.append(p)
    return found, looked


def _download(name: str, root: Path) -> Path:
    import torchvision

    spec = _CIFAR[name]
    try:
        getattr(torchvision.datasets, spec["torchvision"])(str(root), train=True, download=True)
    except Exception as err:  # URLError, socket errors, HTTP errors: all mean the same here
        raise RuntimeError(
            f"could not download {name}: the network is unreachable or refused the request "
            f"({type(err).__name__}: {err}).\n"
            f"Place the files by hand instead: on a machine with internet access run\n"
            f"    torchvision.datasets.{spec['torchvision']}('<dir>', download=True)\n"
            f"and copy <dir>/{spec['pickle_dir']}/ to {root / spec['pickle_dir']}, or put a "
            f"tar.gz of an image-folder tree (train/<class>/*.jpg, test/<class>/*.jpg) at "
            f"{root / (name + '.tar.gz')} or point ${spec['env']} at it."
        ) from err
    return root / spec["pickle_dir"]


def load_cifar(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 (``name``), one split, from the first source found.

    Returns images uint8 ``[N, 3, 32, 32]`` (N = 50,000 train / 10,000 test), labels int64
    ``[N]``, no masks. Raises FileNotFoundError naming every place looked when no source
    exists and ``download`` is False, RuntimeError when the download fails.
    """
    if name not in _CIFAR:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of {sorted(_CIFAR)}")
    _check_split(split)
    spec = _CIFAR[name]
    base = Path(root).expanduser() if root is not None else data_root()

    pickle_dir = base / spec["pickle_dir"]
    tree_dir = base / name
    looked = [f"{pickle_dir}/ (torchvision's python format)"]
    if (pickle_dir / spec["test_files"][0]).is_file():
        return _from_pickles(name, split, pickle_dir, spec)
    looked.append(f"{tree_dir}/{{train,test}}/<class>/*.jpg|png (image-folder tree)")
    if (tree_dir / "train").is_dir() and (tree_dir / "test").is_dir():
        key = _source_key(name, *_tree_signature(tree_dir))
        payload = _cached_split(name, key, split, lambda: _read_tree(tree_dir, 32))
        return _dataset(name, split, payload)
    archives, archive_places = _archive_candidates(name, base)
    looked.extend(f"{p} (archive of an image-folder tree)" for p in archive_places)
    if archives:
        archive = archives[0]
        key = _source_key(name, *_file_signature(archive))
        build = lambda: _checked_splits(_read_archive(archive, 32), archive)  # noqa: E731
        return _dataset(name, split, _cached_split(name, key, split, build))
    if download:
        return _from_pickles(name, split, _download(name, base), spec)
    places = "\n".join(f"  - {p}" for p in looked)
    raise FileNotFoundError(
        f"{name} not found. Looked in:\n{places}\n"
        f"Fix it one of three ways:\n"
        f"  1. pass download=True (needs internet): torchvision downloads it to {pickle_dir}/;\n"
        f"  2. put torchvision's '{spec['pickle_dir']}' folder in {base}/ "
        f"(or set ATCOURSE_DATA to a folder holding it);\n"
        f"  3. put a .tar.gz of an image-folder tree (train/<class>/*.jpg, test/<class>/*.jpg) "
        f"at {base / (name + '.tar.gz')}, or set ${spec['env']} to its path."
    )


def _checked_splits(
    splits: dict[str | None, dict[str, Any]], where: Path
) -> dict[str, dict[str, Any]]:
    if set(splits) != set(SPLITS):
        raise ValueError(f"{where} must hold train/<class>/... and test/<class>/... folders")
    return splits  # type: ignore[return-value]


def _from_pickles(name: str, split: str, directory: Path, spec: dict[str, Any]) -> ImageDataset:
    files = [directory / f for f in (*spec["train_files"], *spec["test_files"], spec["meta"][0])]
    key = _source_key(name, *(part for f in files for part in _file_signature(f)))
    build = lambda: _read_cifar_pickles(directory, spec)  # noqa: E731
    return _dataset(name, split, _cached_split(name, key, split, build))


# ----------------------------------------------------------------------------- folders


def load_folder(
    path: str | Path,
    split: str = "train",
    image_size: int | None = None,
) -> ImageDataset:
    """Any image-folder tree or ``.tar.gz`` archive of one.

    Layouts: ``<path>/{train,test}/<class>/<image>``, or ``<path>/<class>/<image>`` without
    splits, where ``split="train"`` takes everything and ``"test"`` raises ValueError.
    Images keep their size when all share one and ``image_size`` is None; otherwise every
    image is resized (shorter side) and center-cropped to ``image_size`` (default 32).
    Returns images uint8 ``[N, 3, H, W]``, labels int64 ``[N]``, no masks; the data set's
    name is ``"folder:<path>"``.
    """
    _check_split(split)
    p = Path(path).expanduser()
    name = f"folder:{path}"
    if p.is_dir():
        key = _source_key("folder", image_size, *_tree_signature(p))
        build = lambda: _by_split(_read_tree(p, image_size))  # noqa: E731
    elif p.is_file() and tarfile.is_tarfile(p):
        key = _source_key("folder", image_size, *_file_signature(p))
        build = lambda: _by_split(_read_archive(p, image_size))  # noqa: E731
    else:
        raise FileNotFoundError(
            f"{name}: {p} is neither a folder nor a tar archive of an image-folder tree "
            f"(<path>/train/<class>/*.png, <path>/test/<class>/*.png, or <path>/<class>/*.png)"
        )
    try:
        payload = _cached_split("folders", key, split, build)
    except KeyError:
        raise ValueError(
            f"{name} has no {split!r} split: its images are not arranged as "
            f"train/<class>/... and test/<class>/...; use split='train' to take them all"
        ) from None
    return _dataset(name, split, payload)


def _by_split(splits: dict[str | None, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if None in splits:
        return {"train": splits[None]}
    return splits  # type: ignore[return-value]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
