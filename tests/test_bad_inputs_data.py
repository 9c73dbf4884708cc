"""A catalogue of bad inputs to the data layer, one test per case.

Each test asserts that the message names the input, the problem and the fix, and that
the files already on disk are as they were afterwards: a failed load writes nothing, and
a damaged cache is replaced by a good one while every other file is left untouched.
Images are tiny synthetic PNG/JPEG files, so the whole catalogue runs in seconds.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from atcourse.data import CacheWarning, DamagedFileError, load_dataset
from atcourse.data import shapes as shapes_module
from atcourse.data.cache import read_cache
from atcourse.paths import cache_root, data_root


@pytest.fixture(autouse=True)
def quick_shapes_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Normalization statistics from 100 images instead of 2,000: nothing here needs more."""
    monkeypatch.setattr(shapes_module, "_STATS_SAMPLE", 100)
    monkeypatch.delenv("ATCOURSE_CIFAR10_ARCHIVE", raising=False)


def _tree(root: Path, splits: tuple[str, ...] = ("train", "test"), fmt: str = "png") -> Path:
    """``root/<split>/{ant,bee}/<i>.<fmt>``: three distinct 16x16 noise images per class."""
    from PIL import Image

    g = torch.Generator().manual_seed(len(str(root)))
    for split in splits:
        for cls in ("ant", "bee"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                px = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(px.numpy()).save(folder / f"{i}.{fmt}")
    return root


def _tar_gz(tree: Path, path: Path) -> Path:
    """A .tar.gz of ``tree`` whose bytes never vary (fixed mtimes), so damage is repeatable."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for f in sorted(p for p in tree.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{tree.name}/{f.relative_to(tree).as_posix()}")
            data = f.read_bytes()
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def _files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes: what must survive a failed load."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def good_cache(tmp_path: Path) -> dict[str, bytes]:
    """A good folder source already cached (train.pt, test.pt): it must stay intact."""
    load_dataset(f"folder:{_tree(tmp_path / 'good')}", "test")
    return _files(cache_root())


def _assert_nothing_changed(tmp_path: Path, before: dict[str, bytes]) -> None:
    assert _files(tmp_path) == before


# ----------------------------------------------------------------------------- images


def test_corrupt_image_in_folder_tree(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    bad = tree / "train" / "ant" / "1.png"
    bad.write_bytes(b"this is not an image")
    before = _files(tmp_path)
    with pytest.raises(DamagedFileError) as err:
        load_dataset(f"folder:{tree}", "train")
    message = str(err.value)
    assert f"cannot decode image {bad}" in message
    assert "not an image Pillow can identify" in message
    assert "Remove it or replace it with a good copy" in message
    assert "BytesIO" not in message and err.value.path == str(bad)
    _assert_nothing_changed(tmp_path, before)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_image(tmp_path: Path, good_cache: dict[str, bytes], fmt: str) -> None:
    tree = _tree(tmp_path / "tree", fmt=fmt)
    bad = tree / "test" / "bee" / f"2.{fmt}"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    before = _files(tmp_path)
    with pytest.raises(DamagedFileError) as err:
        load_dataset(f"folder:{tree}", "test")
    message = str(err.value)
    assert f"cannot decode image {bad}: it is truncated" in message
    assert "Remove it or replace it with a good copy" in message
    _assert_nothing_changed(tmp_path, before)


def test_corrupt_image_inside_an_archive(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    (tree / "train" / "bee" / "0.png").write_bytes(b"\x89PNG garbage")
    archive = _tar_gz(tree, tmp_path / "tree.tar.gz")
    before = _files(tmp_path)
    with pytest.raises(DamagedFileError) as err:
        load_dataset(f"folder:{archive}", "train")
    message = str(err.value)
    assert f"cannot decode image tree/train/bee/0.png in archive {archive}" in message
    assert "Get a good copy of the archive, or unpack it, remove or replace that file" in message
    _assert_nothing_changed(tmp_path, before)


# ----------------------------------------------------------------------------- archives


@pytest.mark.parametrize("via", ["folder", "cifar10"])
def test_truncated_tar_gz_archive(
    tmp_path: Path, good_cache: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    archive = _tar_gz(_tree(tmp_path / "tree"), tmp_path / "cifar10-jpg.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    before = _files(tmp_path)
    if via == "cifar10":
        monkeypatch.setenv("ATCOURSE_CIFAR10_ARCHIVE", str(archive))
    with pytest.raises(DamagedFileError) as err:
        load_dataset(f"folder:{archive}" if via == "folder" else "cifar10", "train")
    message = str(err.value)
    assert f"archive {archive} is damaged" in message
    assert "ends too early (the file is truncated or damaged)" in message
    assert "Get a good copy: copy or download it again" in message
    if via == "cifar10":  # CIFAR has another way out
        assert "unset $ATCOURSE_CIFAR10_ARCHIVE) and load cifar10 with download=True" in message
    _assert_nothing_changed(tmp_path, before)


@pytest.mark.parametrize("where", ["crc field", "mid-stream"])
def test_archive_with_a_flipped_byte(
    tmp_path: Path, good_cache: dict[str, bytes], where: str
) -> None:
    archive = _tar_gz(_tree(tmp_path / "tree"), tmp_path / "tree.tar.gz")
    raw = bytearray(archive.read_bytes())
    at = len(raw) - 8 if where == "crc field" else len(raw) // 2  # gzip trailer: CRC32, size
    raw[at] ^= 0x10
    archive.write_bytes(bytes(raw))
    before = _files(tmp_path)
    with pytest.raises(DamagedFileError) as err:
        load_dataset(f"folder:{archive}", "train")
    message = str(err.value)
    assert f"archive {archive} is damaged" in message
    if where == "crc field":
        assert "checksum (CRC) does not match its content (bytes were changed)" in message
    assert "Get a good copy" in message and "sha256sum" in message
    _assert_nothing_changed(tmp_path, before)


def test_damaged_cifar_pickle(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    folder = data_root() / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]  # fmt: skip
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    good = pickle.dumps(
        {b"data": torch.zeros(2, 3072, dtype=torch.uint8).numpy(), b"labels": [0, 1]}
    )
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_3").write_bytes(good[:100])
    before = _files(tmp_path)
    with pytest.raises(DamagedFileError) as err:
        load_dataset("cifar10", "train")
    message = str(err.value)
    assert f"cannot read {folder / 'data_batch_3'}: it is truncated" in message
    assert f"Delete {folder} and load with download=True" in message
    _assert_nothing_changed(tmp_path, before)


def test_missing_cifar_lists_every_place(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    before = _files(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", "train")
    message = str(err.value)
    root = data_root()
    assert message.startswith("cifar100 not found. Looked in:")
    for place in (
        f"{root / 'cifar-100-python'}/ (torchvision's python format)",
        f"{root / 'cifar100'}/{{train,test}}/<class>",
        "$ATCOURSE_CIFAR100_ARCHIVE",
        str(root / "cifar100*.tar.gz"),
        "download=True",
    ):
        assert place in message
    _assert_nothing_changed(tmp_path, before)


# ----------------------------------------------------------------------------- folder trees


def test_empty_folder_tree(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    before = _files(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(f"folder:{empty}", "train")
    message = str(err.value)
    assert "no images (.jpg, .jpeg, .png" in message and f"in {empty}:" in message
    assert "expected train/<class>/<image> and test/<class>/<image>" in message
    assert "Put the images there, or point folder: at the folder holding them" in message
    _assert_nothing_changed(tmp_path, before)


def test_folder_tree_with_a_split_missing(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree", splits=("train",))
    before = _files(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{tree}", "test")
    message = str(err.value)
    assert f"{tree} has no test/ folder (found only train/)" in message
    assert "add test/<class>/<image>" in message and "'train' and 'val'" in message
    _assert_nothing_changed(tmp_path, before)


def test_class_folder_with_no_images(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    (tree / "train" / "cow").mkdir()
    (tree / "train" / "cow" / "notes.txt").write_text("no pictures yet")
    before = _files(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{tree}", "train")
    message = str(err.value)
    assert f"class folder {tree / 'train' / 'cow'} holds no images" in message
    assert "add images of that class, or remove the folder" in message
    _assert_nothing_changed(tmp_path, before)


def test_folder_path_is_a_file(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    image = tree / "train" / "ant" / "0.png"
    before = _files(tmp_path)
    with pytest.raises(NotADirectoryError) as err:
        load_dataset(f"folder:{image}", "train")
    message = str(err.value)
    assert f"{image} is a file, not a folder" in message
    assert f"Give the folder that holds them, e.g. folder:{tree}" in message
    _assert_nothing_changed(tmp_path, before)


def test_folder_path_that_does_not_exist(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    missing = tmp_path / "nowhere"
    before = _files(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist. Give the path"):
        load_dataset(f"folder:{missing}", "train")
    _assert_nothing_changed(tmp_path, before)


# ----------------------------------------------------------------------------- caches


def _damaged_cache_reloads(tmp_path: Path, good_cache: dict[str, bytes], damage: str) -> None:
    tree = _tree(tmp_path / "tree")
    name = f"folder:{tree}"
    stored = load_dataset(name, "train", val_size=0)
    (victim,) = [p for p in cache_root().rglob("train.pt") if str(p) not in good_cache]
    others = {k: v for k, v in _files(tmp_path).items() if k != str(victim)}
    raw = bytearray(victim.read_bytes())
    if damage == "flipped":
        raw[raw.find(stored.images.numpy().tobytes()[:256]) + 50] ^= 0x01
    else:
        raw = raw[: len(raw) // 2]
    victim.write_bytes(bytes(raw))
    problem = "fails its integrity check" if damage == "flipped" else "is unreadable, probably"
    with pytest.warns(CacheWarning, match=f"cache {victim} {problem}.*; rebuilding it") as rec:
        again = load_dataset(name, "train", val_size=0)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)  # one line
    assert torch.equal(again.images, stored.images)  # rebuilt from the source, not trusted
    assert read_cache(victim) is not None  # and written back good
    assert {k: v for k, v in _files(tmp_path).items() if k != str(victim)} == others


def test_cache_with_flipped_bytes(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    _damaged_cache_reloads(tmp_path, good_cache, "flipped")


def test_truncated_cache(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    _damaged_cache_reloads(tmp_path, good_cache, "truncated")


def test_shapes_cache_with_flipped_bytes(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    first = load_dataset("shapes", "val", size=30)
    (victim,) = (cache_root() / "shapes").glob("*-val-*.pt")
    others = {k: v for k, v in _files(tmp_path).items() if k != str(victim)}
    raw = bytearray(victim.read_bytes())
    raw[raw.find(first.images.numpy().tobytes()[:256]) + 7] ^= 0x80
    victim.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match=f"cache {victim} fails its integrity check"):
        again = load_dataset("shapes", "val", size=30)
    assert torch.equal(again.images, first.images)
    assert {k: v for k, v in _files(tmp_path).items() if k != str(victim)} == others


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "name, hint",
    [
        ("cifar-10", "Did you mean 'cifar10'?"),
        ("CIFAR100", "Did you mean 'cifar100'?"),
        ("shape", "Did you mean 'shapes'?"),
        ("folder:", "Give the tree's path after the colon"),
    ],
)
def test_unknown_data_set_name(
    tmp_path: Path, good_cache: dict[str, bytes], name: str, hint: str
) -> None:
    before = _files(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset(name, "train")
    message = str(err.value)
    assert f"unknown data set {name!r}" in message
    assert "valid names: shapes, cifar10, cifar100, folder:<path>" in message and hint in message
    _assert_nothing_changed(tmp_path, before)


def test_path_given_without_folder_prefix(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    with pytest.raises(ValueError, match=f"Did you mean 'folder:{tree}'"):
        load_dataset(str(tree), "train")


@pytest.mark.parametrize(
    "split, hint", [("validation", "'val'"), ("tset", "'test'"), ("training", "'train'")]
)
def test_unknown_split(tmp_path: Path, good_cache: dict[str, bytes], split: str, hint: str) -> None:
    before = _files(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset("shapes", split)
    message = str(err.value)
    assert f"unknown split {split!r}" in message
    assert "valid splits are 'train', 'val', 'test'" in message
    assert f"Did you mean {hint}?" in message
    _assert_nothing_changed(tmp_path, before)


def test_size_larger_than_the_data_set(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    tree = _tree(tmp_path / "tree")
    load_dataset(f"folder:{tree}", "test")  # cache it, so "nothing changed" is about the error
    before = _files(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{tree}", "train", size=50)
    message = str(err.value)
    assert f"size=50 is larger than folder:{tree}'s train split, which has 4 images" in message
    assert "2 of its 6 stored training images are held out as val" in message
    assert "Ask for at most 4, or size=None for all" in message
    with pytest.raises(ValueError, match="size=7 is larger than .*'s test split, which has 6"):
        load_dataset(f"folder:{tree}", "test", size=7)
    assert {k: v for k, v in _files(tmp_path).items() if k in before} == before


def test_val_size_larger_than_the_train_split_can_spare(
    tmp_path: Path, good_cache: dict[str, bytes]
) -> None:
    tree = _tree(tmp_path / "tree")
    with pytest.raises(ValueError) as err:
        load_dataset(f"folder:{tree}", "val", val_size=5)
    message = str(err.value)
    assert f"val_size=5 is more than folder:{tree}'s train split can spare" in message
    assert "6 images in 2 classes" in message and "Use val_size <= 4" in message
    with pytest.raises(ValueError, match="no val split when val_size=0"):
        load_dataset("shapes", "val", val_size=0)


def test_bad_inputs_leave_no_temporary_files(tmp_path: Path, good_cache: dict[str, bytes]) -> None:
    """After all the failures above, a cache folder holds no half-written file."""
    tree = _tree(tmp_path / "tree")
    (tree / "train" / "ant" / "0.png").write_bytes(b"broken")
    with pytest.raises(DamagedFileError):
        load_dataset(f"folder:{tree}", "train")
    leftovers = [p for p in cache_root().rglob("*") if p.is_file() and not p.suffix == ".pt"]
    assert leftovers == [] and sorted(os.listdir(cache_root())) == ["folders"]
