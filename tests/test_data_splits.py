"""Tests of the train / val / test splits: disjoint, deterministic, and train unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from atcourse.data import ImageDataset, balanced_subset_indices, load_dataset, load_splits
from atcourse.data import shapes as shapes_module
from atcourse.data.dataset import validation_indices
from atcourse.data.shapes import generate_shapes, split_seed


@pytest.fixture
def quick_shapes_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Normalization statistics from 100 images instead of 2,000, where they do not matter."""
    monkeypatch.setattr(shapes_module, "_STATS_SAMPLE", 100)


def _image_hashes(ds: ImageDataset) -> set[str]:
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in ds.images}


def _fingerprint(ds: ImageDataset) -> str:
    h = hashlib.sha256()
    for t in (ds.images, ds.labels, ds.masks):
        assert t is not None
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _assert_pairwise_disjoint(train: ImageDataset, val: ImageDataset, test: ImageDataset) -> None:
    hashes = {s.split: _image_hashes(s) for s in (train, val, test)}
    for s in (train, val, test):
        assert len(hashes[s.split]) == len(s), f"{s.split} holds the same image twice"
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


# ----------------------------------------------------------------------------- shapes


def test_shapes_train_and_test_images_unchanged_by_the_val_split() -> None:
    """Teachers trained on shapes stay valid: train and test are bit for bit what they were.

    The fingerprints were taken before the val split existed (same seeds, sizes and
    difficulty); the split seeds are pinned too, since every cached set and teacher key
    derives from them.
    """
    assert split_seed(0, "train") == 6798706165211729750
    assert split_seed(0, "test") == 4289490633835912535
    # The difficulty of that time, given explicitly (the defaults have since been eased).
    before = dict(distractors=(2, 4), size_range=(12.0, 22.0), same_colour=0.25,
                  occlusion=0.15, clutter=0.15)  # fmt: skip
    train = load_dataset("shapes", "train", size=64, **before)
    assert _fingerprint(train) == (
        "37ba2fc8a0194420638f125647fa7790dc0a7ff77efd30c58436257ef39545b2"
    )
    test = load_dataset("shapes", "test", size=50, **before)
    assert _fingerprint(test) == (
        "21693755076b11c723aeb2134bb4600ad95509163c1827176c1ee3b98fcace3d"
    )
    expected_mean = (0.4971769607843137, 0.4991485294117647, 0.5008561887254902)
    assert train.mean == pytest.approx(expected_mean, abs=1e-12)
    # The current defaults: the images the shipped teachers were trained on.
    assert _fingerprint(load_dataset("shapes", "train", size=64)) == (
        "17e9f0c1c38f0e46431b929296201daf94df9266593dbbd47637e4b3ac066dcb"
    )
    assert _fingerprint(load_dataset("shapes", "test", size=50)) == (
        "c7c7fc6a6bcbc483501cc0397ed61c3d78898a7fe4c9f2f9f6b118292eea95dd"
    )
    # And load_dataset's train split is exactly the generator's train stream.
    train = load_dataset("shapes", "train", size=64)
    images, labels, masks = generate_shapes(64, seed=split_seed(0, "train"))
    assert torch.equal(train.images, images) and torch.equal(train.labels, labels)
    assert train.masks is not None and torch.equal(train.masks, masks)


def test_shapes_splits_pairwise_disjoint(quick_shapes_stats: None) -> None:
    train = load_dataset("shapes", "train", size=300)
    val = load_dataset("shapes", "val", size=200)
    test = load_dataset("shapes", "test", size=200)
    assert val.split == "val" and len(val) == 200 and val.masks is not None
    _assert_pairwise_disjoint(train, val, test)
    # val comes from the training distribution: same statistics, all classes.
    assert val.mean == train.mean and val.std == train.std
    assert torch.bincount(val.labels, minlength=10).min() == 20


def test_shapes_val_size_sets_the_generated_count(quick_shapes_stats: None) -> None:
    assert len(load_dataset("shapes", "val", val_size=30)) == 30
    assert len(load_dataset("shapes", "val", val_size=30, size=20)) == 20  # size wins
    # val_size never changes the shapes train split.
    a = load_dataset("shapes", "train", size=40, val_size=0)
    b = load_dataset("shapes", "train", size=40, val_size=500)
    assert torch.equal(a.images, b.images)


# ----------------------------------------------------------------------------- real data


def _noise_tree(root: Path, per_class: dict[str, int], test_per_class: int = 3) -> Path:
    """A split tree of distinct random-noise PNGs (distinct images, so hashes tell them apart)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for cls, n in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n if split == "train" else test_per_class):
                pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i:03d}.png")
    return root


def test_folder_splits_pairwise_disjoint_and_cover_the_stored_train_split(tmp_path: Path) -> None:
    tree = _noise_tree(tmp_path / "tree", {"a": 10, "b": 10, "c": 10, "d": 10})
    name = f"folder:{tree}"
    train, val, test = (load_dataset(name, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (36, 4, 12)
    _assert_pairwise_disjoint(train, val, test)
    stored = load_dataset(name, "train", val_size=0)
    assert _image_hashes(train) | _image_hashes(val) == _image_hashes(stored)
    # Class-balanced: one of each class by default, two with val_size=8.
    assert torch.bincount(val.labels).tolist() == [1, 1, 1, 1]
    val8 = load_dataset(name, "val", val_size=8)
    assert torch.bincount(val8.labels).tolist() == [2, 2, 2, 2]
    assert not _image_hashes(val8) & _image_hashes(load_dataset(name, "train", val_size=8))


def test_folder_val_is_fixed_whatever_the_seed_and_size(tmp_path: Path) -> None:
    tree = _noise_tree(tmp_path / "tree", {"a": 10, "b": 10})
    name = f"folder:{tree}"
    val = load_dataset(name, "val", val_size=4)
    assert torch.equal(val.images, load_dataset(name, "val", val_size=4, seed=7).images)
    val_hashes = _image_hashes(val)
    for seed in range(4):
        small = load_dataset(name, "train", val_size=4, size=6, seed=seed)
        assert not _image_hashes(small) & val_hashes
    assert torch.equal(val.images, load_dataset(name, "val", val_size=4).images)


def test_validation_indices_partition_and_limits() -> None:
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)
    train, val = validation_indices(labels, None, "toy")
    assert len(val) == 3 and sorted(labels[val].tolist()) == [0, 1, 2]  # 10% -> 1, >= 1/class
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(12))
    train, val = validation_indices(labels, 0, "toy")
    assert len(val) == 0 and torch.equal(train, torch.arange(12))
    train, val = validation_indices(labels, 9, "toy")  # the most: one per class stays
    assert torch.bincount(labels[train]).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"val_size=10 is more than toy's train split.*<= 9"):
        validation_indices(labels, 10, "toy")


def test_balanced_subset_keep_leaves_samples_of_every_class() -> None:
    labels = torch.tensor([0] * 4 + [1] * 4)
    idx = balanced_subset_indices(labels, 6, seed=0, keep=1)
    assert torch.bincount(labels[idx]).tolist() == [3, 3]
    # Nested: a smaller subset of the same seed is part of a larger one.
    big = balanced_subset_indices(torch.arange(100) % 10, 50, seed=3)
    small = balanced_subset_indices(torch.arange(100) % 10, 23, seed=3)
    assert set(small.tolist()) <= set(big.tolist())
    with pytest.raises(ValueError, match="cannot take 7"):
        balanced_subset_indices(labels, 7, seed=0, keep=1)


# ----------------------------------------------------------------------------- load_splits


def test_load_splits_returns_train_val_test(tmp_path: Path, quick_shapes_stats: None) -> None:
    train, val, test = load_splits({"train_size": 50, "val_size": 20, "test_size": 30})
    assert (train.split, len(train)) == ("train", 50)
    assert val is not None and (val.split, len(val)) == ("val", 20)
    assert (test.split, len(test)) == ("test", 30)
    _assert_pairwise_disjoint(train, val, test)

    tree = _noise_tree(tmp_path / "tree", {"a": 10, "b": 10})
    cfg = {"dataset": f"folder:{tree}", "train_size": None, "test_size": None}
    train, val, test = load_splits(cfg)
    assert val is not None and (len(train), len(val), len(test)) == (18, 2, 6)
    train, val, test = load_splits({**cfg, "val_size": 0})
    assert val is None and len(train) == 20  # no validation: the whole stored train split
    with pytest.raises(ValueError, match="no val split when val_size=0"):
        load_dataset(cfg["dataset"], "val", val_size=0)
