"""Data sets as uint8 tensors in memory, and a loader that keeps them on the device.

``load_dataset(name, split)`` is the one entry point. Names:

- ``shapes``: the built-in synthetic set, 10 classes of 32x32 shapes on clutter, with
  per-image object masks (see :mod:`atcourse.data.shapes`);
- ``cifar10`` / ``cifar100``: from torchvision's files, an image-folder tree or a
  ``.tar.gz`` archive under the data root (see :mod:`atcourse.data.images`);
- ``folder:<path>``: any image-folder tree or ``.tar.gz`` of one.

:class:`DeviceLoader` turns a data set into augmented, normalized batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atcourse.data.images import (
    ImageDataset,
    balanced_subset_indices,
    channel_stats,
    load_cifar,
    load_folder,
)
from atcourse.data.loader import DeviceLoader, EpochPlan, augment_batch, denormalize
from atcourse.data.shapes import CLASSES as SHAPES_CLASSES
from atcourse.data.shapes import Difficulty, generate_shapes, load_shapes

__all__ = [
    "DATASET_NAMES",
    "DeviceLoader",
    "Difficulty",
    "EpochPlan",
    "ImageDataset",
    "SHAPES_CLASSES",
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
    **options: Any,
) -> ImageDataset:
    """Load one split of a data set.

    Args:
        name: ``shapes``, ``cifar10``, ``cifar100`` or ``folder:<path>``.
        split: ``"train"`` or ``"test"``.
        root: where to look for CIFAR (default: ``data_root()``); ignored otherwise.
        seed: ``shapes``: the generation seed (train and test derive different streams
            from it). Real data: the seed of the ``size`` subset.
        size: ``shapes``: number of images generated (default 20,000 train / 4,000 test).
            Real data: take a deterministic, class-balanced subset of this many images
            (None: all).
        download: CIFAR only: let torchvision download it when no local copy exists.
        **options: ``shapes``: difficulty knobs (:class:`Difficulty` fields);
            ``folder:``: ``image_size``.

    Returns:
        An :class:`ImageDataset`: images uint8 ``[N, 3, H, W]``, labels int64 ``[N]``,
        masks bool ``[N, H, W]`` (``shapes`` only, else None).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "shapes":
        return load_shapes(split, seed=seed, size=size, **options)
    if name in ("cifar10", "cifar100"):
        if options:
            raise TypeError(f"{name} takes no options, got {sorted(options)}")
        dataset = load_cifar(name, split, root=root, download=download)
    elif name.startswith("folder:") and len(name) > len("folder:"):
        unknown = sorted(set(options) - {"image_size"})
        if unknown:
            raise TypeError(f"folder data sets take only image_size, got {unknown}")
        dataset = load_folder(name[len("folder:") :], split, **options)
    else:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if size is not None and size < len(dataset):
        dataset = dataset.subset(balanced_subset_indices(dataset.labels, size, seed))
    return dataset


def load_splits(cfg: Mapping[str, Any]) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets a configuration asks for.

    Reads ``dataset`` (None means ``shapes``), ``train_size`` and ``test_size`` from
    ``cfg`` (any mapping; missing keys take their defaults). The data set itself does not
    depend on the run's ``seed``: every seed trains on the same images and is scored on
    the same test set, so runs over seeds differ only in initialisation, order and
    augmentation, as on CIFAR.
    """
    name = cfg.get("dataset") or "shapes"
    train = load_dataset(name, "train", seed=0, size=cfg.get("train_size"))
    test = load_dataset(name, "test", seed=0, size=cfg.get("test_size"))
    return train, test
