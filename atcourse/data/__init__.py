"""Data sets as uint8 tensors in memory, and a loader that keeps them on the device.

``load_dataset(name, split)`` is the one entry point; ``split`` is ``"train"``, ``"val"``
or ``"test"``. Names:

- ``shapes``: the built-in synthetic set, 10 classes of 32x32 shapes on clutter, with
  per-image object masks (see :mod:`atcourse.data.shapes`); each split is generated
  from its own random stream;
- ``cifar10`` / ``cifar100``: from torchvision's files, an image-folder tree or a
  ``.tar.gz`` archive under the data root (see :mod:`atcourse.data.cifar`);
- ``folder:<path>``: any image-folder tree or ``.tar.gz`` of one
  (see :mod:`atcourse.data.folders`).

Real data stores train and test only: its ``val`` split is a fixed, class-balanced part
of the stored train split, and ``train`` is the rest (:mod:`atcourse.data.dataset`).
Decoded and generated sets are cached with a content hash (:mod:`atcourse.data.cache`).

:class:`DeviceLoader` turns a data set into augmented, normalized batches.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from atcourse.data.cache import CacheWarning
from atcourse.data.cifar import CIFAR_NAMES, load_cifar
from atcourse.data.dataset import (
    SPLITS,
    DamagedFileError,
    ImageDataset,
    balanced_subset_indices,
    channel_stats,
    check_split,
    validation_indices,
)
from atcourse.data.folders import load_folder
from atcourse.data.loader import DeviceLoader, EpochPlan, augment_batch, denormalize
from atcourse.data.shapes import CLASSES as SHAPES_CLASSES
from atcourse.data.shapes import Difficulty, generate_shapes, load_shapes

__all__ = [
    "DATASET_NAMES",
    "CacheWarning",
    "DamagedFileError",
    "DeviceLoader",
    "Difficulty",
    "EpochPlan",
    "ImageDataset",
    "SHAPES_CLASSES",
    "SPLITS",
    "augment_batch",
    "balanced_subset_indices",
    "channel_stats",
    "denormalize",
    "generate_shapes",
    "load_dataset",
    "load_splits",
]

DATASET_NAMES = ("shapes", "cifar10", "cifar100", "folder:<path>")


def load_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    seed: int = 0,
    size: int | None = None,
    download: bool = False,
    val_size: int | None = None,
    **options: Any,
) -> ImageDataset:
    """Load one split of a data set.

    Args:
        name: ``shapes``, ``cifar10``, ``cifar100`` or ``folder:<path>``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: where to look for CIFAR (default: ``data_root()``); ignored otherwise.
        seed: ``shapes``: the generation seed (each split derives its own stream from
            it). Real data: the seed of the ``size`` subset (never of the validation
            hold-out, which is fixed).
        size: ``shapes``: number of images generated (default 20,000 train / 2,000 val /
            4,000 test). Real data: a deterministic, class-balanced subset of this many
            images of the split (None: all); more than the split holds is an error.
        download: CIFAR only: let torchvision download it when no local copy exists.
        val_size: the validation split's size. Real data: that many images of the stored
            train split are held out as ``val`` and ``train`` is the rest (None: 10% of
            the stored train split, at least one per class; 0: none, ``train`` is the
            whole stored split and ``val`` an error). Ask for ``train`` and ``val`` with
            the same ``val_size``, or they overlap. ``shapes``: the number of ``val``
            images generated when ``size`` is None (default 2,000); ``train`` and
            ``test`` do not depend on it.
        **options: ``shapes``: difficulty knobs (:class:`Difficulty` fields);
            ``folder:``: ``image_size``.

    Returns:
        An :class:`ImageDataset`: images uint8 ``[N, 3, H, W]``, labels int64 ``[N]``,
        masks bool ``[N, H, W]`` (``shapes`` only, else None).
    """
    check_split(split)
    if size is not None and int(size) <= 0:
        raise ValueError(f"size must be positive (None: the whole split), got {size}")
    if val_size is not None and int(val_size) < 0:
        raise ValueError(f"val_size must be >= 0 (None: the default), got {val_size}")
    if split == "val" and val_size == 0:
        raise ValueError(
            f"{name} has no val split when val_size=0 (nothing held out for validation): "
            f"leave val_size at None or give a positive number"
        )
    if name == "shapes":
        if split == "val" and size is None:
            size = val_size
        return load_shapes(split, seed=seed, size=size, **options)
    stored_split = "test" if split == "test" else "train"
    if name in CIFAR_NAMES:
        if options:
            raise TypeError(f"{name} takes no options, got {sorted(options)}")
        dataset = load_cifar(name, stored_split, root=root, download=download)
    elif name.startswith("folder:") and len(name) > len("folder:"):
        unknown = sorted(set(options) - {"image_size"})
        if unknown:
            raise TypeError(f"folder data sets take only image_size, got {unknown}")
        dataset = load_folder(name[len("folder:") :], stored_split, **options)
    else:
        raise ValueError(_unknown_name(name))
    held_out = ""
    if split != "test":
        train_idx, val_idx = validation_indices(dataset.labels, val_size, name)
        if len(val_idx):
            held_out = (
                f" ({len(val_idx)} of its {len(dataset)} stored training images are held out "
                f"as val; val_size sets how many)"
            )
            dataset = dataset.subset(train_idx if split == "train" else val_idx)
        dataset = replace(dataset, split=split)
    if size is not None and size > len(dataset):
        raise ValueError(
            f"size={size} is larger than {name}'s {split} split, which has {len(dataset)} "
            f"images{held_out}. Ask for at most {len(dataset)}, or size=None for all."
        )
    if size is not None and size < len(dataset):
        dataset = dataset.subset(balanced_subset_indices(dataset.labels, size, seed))
    return dataset


def _unknown_name(name: str) -> str:
    message = f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}."
    known = ("shapes", *CIFAR_NAMES)
    guess = difflib.get_close_matches(name.lower().replace("-", "").replace("_", ""), known, 1)
    if name.rstrip(":").lower() == "folder":
        return f"{message} Give the tree's path after the colon: 'folder:/path/to/images'."
    if os.path.exists(os.path.expanduser(name)):
        return f"{message} Did you mean 'folder:{name}'?"
    if guess:
        return f"{message} Did you mean {guess[0]!r}?"
    return message


def load_splits(
    cfg: Mapping[str, Any],
) -> tuple[ImageDataset, ImageDataset | None, ImageDataset]:
    """Train, validation and test sets a configuration asks for: ``(train, val, test)``.

    Reads ``dataset`` (None means ``shapes``), ``train_size``, ``val_size`` and
    ``test_size`` from ``cfg`` (any mapping; missing keys take their defaults). Defaults
    (None): all of the split for train and test; for val, 10% of the stored train split
    of real data (held out of train; CIFAR-10: 5,000) and 2,000 generated images for
    ``shapes``. ``val_size=0`` gives no validation split: ``val`` is None and real data
    trains on its whole stored train split. The data does not depend on the run's
    ``seed``: every seed trains on the same images and is scored on the same test set,
    so runs over seeds differ only in initialisation, order and augmentation, as on CIFAR.
    """
    name = cfg.get("dataset") or "shapes"
    val_size = cfg.get("val_size")
    train = load_dataset(name, "train", seed=0, size=cfg.get("train_size"), val_size=val_size)
    val = None if val_size == 0 else load_dataset(name, "val", seed=0, val_size=val_size)
    test = load_dataset(name, "test", seed=0, size=cfg.get("test_size"))
    return train, val, test
