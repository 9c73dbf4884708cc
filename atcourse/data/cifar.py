"""CIFAR-10 and CIFAR-100, decoded once into uint8 tensors and cached.

Looked for under the data root in this order:

1. torchvision's python format: ``cifar-10-batches-py/`` or ``cifar-100-python/``;
2. an image-folder tree: ``cifar10/{train,test}/<class>/*.png|jpg``;
3. an archive of such a tree: ``$ATCOURSE_CIFAR10_ARCHIVE`` (``..._CIFAR100_...``), else
   ``cifar10*.tar.gz`` (``cifar100*.tar.gz``) in the data root; the tree may sit under one
   top folder inside the archive;
4. with ``download=True``: torchvision's downloader, which writes format 1.

The first load of the 60,000-JPEG CIFAR-10 archive takes about 9 s on 2 CPU cores, of
which about 2.5 s is walking the tar and 2.5 s decoding; later loads read the cache
(:mod:`atcourse.data.cache`). A damaged file (a pickle, an archive, an image) stops the
load with its path and the way to a good copy.

Class names are sorted alphabetically and that order is the label order.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from atcourse.data.cache import cached_split, file_signature, source_key, tree_signature
from atcourse.data.dataset import DamagedFileError, ImageDataset
from atcourse.data.folders import STORED_SPLITS, dataset_from, read_source
from atcourse.paths import data_root

__all__ = ["CIFAR_NAMES", "load_cifar"]

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
CIFAR_NAMES = tuple(_CIFAR)


def _unpickle(path: Path, fix: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as err:
        raise DamagedFileError(
            f"cannot read {path}: it is truncated or not a CIFAR batch file "
            f"({type(err).__name__}: {err}). {fix}",
            path,
        ) from err


def _read_cifar_pickles(directory: Path, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    fix = (
        f"Delete {directory} and load with download=True to fetch a fresh copy, or copy "
        f"torchvision's '{spec['pickle_dir']}' folder there again."
    )
    meta_file, meta_key = spec["meta"]
    names = [
        n.decode() if isinstance(n, bytes) else n
        for n in _unpickle(directory / meta_file, fix)[meta_key]
    ]
    classes = sorted(names)
    # torchvision's order is already alphabetical; remap anyway so the rule always holds.
    remap = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
    out = {}
    for split in STORED_SPLITS:
        chunks, labels = [], []
        for fn in spec[f"{split}_files"]:
            batch = _unpickle(directory / fn, fix)
            try:
                data = torch.as_tensor(batch["data"], dtype=torch.uint8)
                chunks.append(data.reshape(-1, 3, 32, 32))
                labels.append(torch.as_tensor(batch[spec["label_key"]], dtype=torch.long))
            except (KeyError, RuntimeError, TypeError) as err:
                raise DamagedFileError(
                    f"{directory / fn} is not a CIFAR batch ({type(err).__name__}: {err}). {fix}",
                    directory / fn,
                ) from err
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
    """CIFAR-10 or CIFAR-100 (``name``), one stored split, from the first source found.

    ``split`` is ``"train"`` or ``"test"`` as stored (``load_dataset`` holds the
    validation split out of the train split). Returns images uint8 ``[N, 3, 32, 32]``
    (N = 50,000 train / 10,000 test), labels int64 ``[N]``, no masks. Raises
    FileNotFoundError naming every place looked when no source exists and ``download``
    is False, RuntimeError when the download fails, DamagedFileError naming a damaged file.
    """
    if name not in _CIFAR:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of {sorted(_CIFAR)}")
    if split not in STORED_SPLITS:
        raise ValueError(f"load_cifar reads the stored splits 'train' and 'test', got {split!r}")
    spec = _CIFAR[name]
    base = Path(root).expanduser() if root is not None else data_root()

    pickle_dir = base / spec["pickle_dir"]
    tree_dir = base / name
    looked = [f"{pickle_dir}/ (torchvision's python format)"]
    if (pickle_dir / spec["test_files"][0]).is_file():
        return _from_pickles(name, split, pickle_dir, spec)
    looked.append(f"{tree_dir}/{{train,test}}/<class>/*.jpg|png (image-folder tree)")
    if (tree_dir / "train").is_dir() and (tree_dir / "test").is_dir():
        key = source_key(name, *tree_signature(tree_dir))
        build = lambda: read_source(tree_dir, 32, STORED_SPLITS)  # noqa: E731
        return dataset_from(name, split, cached_split(name, key, split, build))
    archives, archive_places = _archive_candidates(name, base)
    looked.extend(f"{p} (archive of an image-folder tree)" for p in archive_places)
    if archives:
        archive = archives[0]
        key = source_key(name, *file_signature(archive))
        advice = (
            f"; or delete it (or unset ${spec['env']}) and load {name} with download=True "
            f"to use torchvision's copy"
        )
        build = lambda: read_source(archive, 32, STORED_SPLITS, advice)  # noqa: E731
        return dataset_from(name, split, cached_split(name, key, split, build))
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


def _from_pickles(name: str, split: str, directory: Path, spec: dict[str, Any]) -> ImageDataset:
    files = [directory / f for f in (*spec["train_files"], *spec["test_files"], spec["meta"][0])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: torchvision's folder {directory} lacks {', '.join(missing)}. Delete the "
            f"folder and load with download=True, or copy the complete folder there again."
        )
    key = source_key(name, *(part for f in files for part in file_signature(f)))
    build = lambda: _read_cifar_pickles(directory, spec)  # noqa: E731
    return dataset_from(name, split, cached_split(name, key, split, build))
