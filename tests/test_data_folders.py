"""Tests of image-folder trees, archives of them, and CIFAR (atcourse.data.folders, .cifar)."""

from __future__ import annotations

import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch

from atcourse.data import DamagedFileError, load_dataset
from atcourse.data import folders as folders_module
from atcourse.paths import data_root as configured_data_root


@pytest.fixture
def data_root() -> Path:
    """The test's data root (``tests/conftest.py`` points it into the test's tmp_path)."""
    return configured_data_root()


# ----------------------------------------------------------------------------- folders


_COLOURS = {"cat": (200, 30, 30), "ant": (30, 200, 30), "bee": (30, 30, 200)}


def _make_tree(root: Path, splits: bool = True) -> Path:
    from PIL import Image

    for split, count in (("train", 3), ("test", 2)) if splits else ((None, 3),):
        for cls, colour in _COLOURS.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True)
            for i in range(count):
                size = (40, 36) if i == 0 and cls == "cat" else (32, 32)
                Image.new("RGB", size, colour).save(folder / f"{i}.png")
    return root


def _archive(tree: Path, path: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        tf.add(tree, arcname=tree.name)  # one top folder inside the archive
    return path


def test_image_folder_tree_and_archive(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "tiny")
    archive = _archive(tree, tmp_path / "tiny.tar.gz")
    for source in (tree, archive):
        train = load_dataset(f"folder:{source}", "train", val_size=0)
        test = load_dataset(f"folder:{source}", "test")
        assert train.classes == ["ant", "bee", "cat"]
        assert train.images.shape == (9, 3, 32, 32) and len(test) == 6
        assert train.masks is None
        for ds in (train, test):
            for img, label in zip(ds.images, ds.labels, strict=True):
                expected = torch.tensor(_COLOURS[ds.classes[int(label)]], dtype=torch.float)
                assert torch.allclose(img.float().mean((1, 2)), expected, atol=2.0)
    a = load_dataset(f"folder:{tree}", "test")
    b = load_dataset(f"folder:{archive}", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_image_folder_without_splits(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "flat", splits=False)
    ds = load_dataset(f"folder:{tree}", "train", image_size=24, val_size=0)
    assert ds.images.shape == (9, 3, 24, 24)
    with pytest.raises(ValueError, match="no 'test' split"):
        load_dataset(f"folder:{tree}", "test")
    # Without a test split, train and val still come from the training images.
    train = load_dataset(f"folder:{tree}", "train", image_size=24)
    val = load_dataset(f"folder:{tree}", "val", image_size=24)
    assert len(train) + len(val) == 9 and len(val) == 3


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_streamed_archive_is_read_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, suffix: str
) -> None:
    """Archives too big for memory are streamed; the stream is still checked to its end."""
    monkeypatch.setattr(folders_module, "_IN_MEMORY_ARCHIVE_BYTES", 0)
    tree = _make_tree(tmp_path / "tiny")
    archive = _archive(tree, tmp_path / f"tiny{suffix}", mode)
    good = load_dataset(f"folder:{archive}", "test")
    assert len(good) == 6
    if suffix == ".tar.gz":
        damaged = bytearray(archive.read_bytes())
        damaged[len(damaged) // 2] ^= 0x55
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(DamagedFileError, match=f"archive {bad} is damaged"):
            load_dataset(f"folder:{bad}", "test")


def test_tar_header_damage_is_not_a_silent_short_read(tmp_path: Path) -> None:
    """tarfile stops quietly at a bad header after the first; the reader must not."""
    tree = _make_tree(tmp_path / "tiny")
    archive = _archive(tree, tmp_path / "tiny.tar", "w")
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
    data[members[len(members) // 2].offset + 10] ^= 0x20  # a name byte: header checksum fails
    archive.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="tar structure is unreadable"):
        load_dataset(f"folder:{archive}", "train")


def test_class_with_test_images_only(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "tiny")
    for f in (tree / "train" / "bee").iterdir():
        f.unlink()
    (tree / "train" / "bee").rmdir()
    with pytest.raises(ValueError, match=r"\['bee'\] have test images but no training images"):
        load_dataset(f"folder:{tree}", "train")


def test_val_folder_is_named_not_merged(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "tiny")
    (tree / "val" / "ant").mkdir(parents=True)
    (tree / "val" / "ant" / "0.png").write_bytes((tree / "train" / "ant" / "0.png").read_bytes())
    with pytest.raises(ValueError, match="mixes layouts.*val/ folder is not read"):
        load_dataset(f"folder:{tree}", "train")


# ----------------------------------------------------------------------------- CIFAR


def test_cifar_missing_lists_every_place(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATCOURSE_CIFAR10_ARCHIVE", raising=False)
    data_root.mkdir(parents=True)
    (data_root / "cifar100.tar.gz").write_bytes(b"")  # matches cifar10*, yet is not CIFAR-10
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", "train")
    message = str(err.value)
    for place in (
        str(data_root / "cifar-10-batches-py"),
        str(data_root / "cifar10") + "/{train,test}",
        str(data_root / "cifar10*.tar.gz"),
        "$ATCOURSE_CIFAR10_ARCHIVE",
        "download=True",
    ):
        assert place in message


def test_cifar_download_offline_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.delenv("ATCOURSE_CIFAR100_ARCHIVE", raising=False)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(RuntimeError, match="network is unreachable"):
        load_dataset("cifar100", "test", download=True)


def test_cifar_torchvision_pickles(data_root: Path) -> None:
    folder = data_root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    g = torch.Generator().manual_seed(0)

    def write(name: str, n: int) -> None:
        data = torch.randint(0, 256, (n, 3072), generator=g, dtype=torch.uint8).numpy()
        batch = {b"data": data, b"labels": [i % 10 for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)

    for i in range(1, 6):
        write(f"data_batch_{i}", 4)
    write("test_batch", 10)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names]}, f)
    train = load_dataset("cifar10", "train", val_size=0)
    test = load_dataset("cifar10", "test", size=5, seed=1)
    assert train.images.shape == (20, 3, 32, 32) and train.classes == names
    assert len(test) == 5 and test.mean == train.mean
    # The default validation split: 10% of the stored train split but at least one image
    # of each class (the train batches hold classes 0-3, five images each).
    held_in = load_dataset("cifar10", "train")
    val = load_dataset("cifar10", "val")
    assert (len(held_in), len(val)) == (16, 4) and val.split == "val"
    assert torch.bincount(val.labels, minlength=10).tolist() == [1, 1, 1, 1] + [0] * 6
    assert val.mean == train.mean  # every split is normalized with the stored train stats


@pytest.mark.skipif(
    not os.environ.get("ATCOURSE_CIFAR10_ARCHIVE"),
    reason="set ATCOURSE_CIFAR10_ARCHIVE to a CIFAR-10 image-folder .tar.gz",
)
def test_real_cifar10_archive() -> None:
    test = load_dataset("cifar10", "test")
    assert test.images.shape == (10_000, 3, 32, 32)
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert test.classes[0] == "airplane" and test.classes[-1] == "truck"
    for got, expected in zip(test.mean, (0.4913, 0.4821, 0.4465), strict=True):
        assert abs(got - expected) < 0.01
    # The validation split: 500 images of each class held out of the 50,000.
    train, val = load_dataset("cifar10", "train"), load_dataset("cifar10", "val")
    assert (len(train), len(val)) == (45_000, 5_000)
    assert torch.equal(torch.bincount(val.labels), torch.full((10,), 500))
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 4_500))
    assert val.mean == train.mean == test.mean
