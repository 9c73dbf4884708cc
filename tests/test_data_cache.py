"""Tests of the cache files' integrity check (atcourse.data.cache)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from atcourse.data import CacheWarning, load_dataset
from atcourse.data import cache as cache_module
from atcourse.data import shapes as shapes_module
from atcourse.data.cache import content_digest, read_cache, write_cache
from atcourse.paths import cache_root


@pytest.fixture
def quick_shapes_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Normalization statistics from 100 images instead of 2,000: these tests test caching."""
    monkeypatch.setattr(shapes_module, "_STATS_SAMPLE", 100)


def _flip_pixel_byte(path: Path, images: torch.Tensor) -> None:
    """Flip one byte of the stored pixels (found by their bytes) of a cache file."""
    raw = bytearray(path.read_bytes())
    at = raw.find(images.contiguous().numpy().tobytes()[:256])
    assert at >= 0, "the pixels should be stored uncompressed"
    raw[at + 100] ^= 0x01
    path.write_bytes(bytes(raw))


def test_round_trip_and_digest_covers_every_value(tmp_path: Path) -> None:
    content = {"images": torch.arange(24, dtype=torch.uint8), "classes": ["a", "b"]}
    path = write_cache(tmp_path / "c.pt", content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good file loads without a word
        back = read_cache(path)
    assert back is not None and torch.equal(back["images"], content["images"])
    assert back["classes"] == ["a", "b"]
    digest = content_digest(content)
    assert content_digest({**content, "classes": ["a", "c"]}) != digest
    assert content_digest({**content, "images": content["images"].to(torch.int16)}) != digest
    assert content_digest({**content, "images": content["images"].view(2, 12)}) != digest
    assert read_cache(tmp_path / "missing.pt") is None


def test_digest_of_a_many_chunk_tensor_sees_a_change_in_any_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "_CHUNK_BYTES", 1 << 10)  # 40 chunks, hashed on threads
    x = torch.randint(0, 256, (40 << 10,), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)
    digest = content_digest({"x": x})
    assert content_digest({"x": x.clone()}) == digest
    for i in (0, 20 << 10, (40 << 10) - 1):
        y = x.clone()
        y[i] ^= 1
        assert content_digest({"x": y}) != digest


def test_shapes_cache_with_a_flipped_pixel_is_rebuilt(quick_shapes_stats: None) -> None:
    first = load_dataset("shapes", "test", size=40, seed=2)
    (path,) = (cache_root() / "shapes").glob("*-test-*.pt")
    _flip_pixel_byte(path, first.images)
    with pytest.warns(CacheWarning, match=f"cache {path} fails its integrity check"):
        again = load_dataset("shapes", "test", size=40, seed=2)
    assert torch.equal(again.images, first.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt and rewritten: quiet from now on
        load_dataset("shapes", "test", size=40, seed=2)


def test_cache_without_integrity_check_is_rebuilt(quick_shapes_stats: None) -> None:
    """Files written before caches carried a digest are replaced, not trusted."""
    first = load_dataset("shapes", "test", size=20)
    (path,) = (cache_root() / "shapes").glob("*-test-*.pt")
    old = {"images": first.images, "labels": first.labels, "masks": first.masks}
    torch.save(old, path)  # the earlier layout: the payload alone
    with pytest.warns(CacheWarning, match="has no integrity check"):
        again = load_dataset("shapes", "test", size=20)
    assert torch.equal(again.images, first.images)
    assert read_cache(path) is not None


def test_damaged_folder_cache_is_rebuilt_and_its_good_sibling_untouched(tmp_path: Path) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "t" / split / cls).mkdir(parents=True)
            for i in range(3):
                px = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(px.numpy()).save(tmp_path / "t" / split / cls / f"{i}.png")
    name = f"folder:{tmp_path / 't'}"
    stored = load_dataset(name, "train", val_size=0)
    (train_file,) = cache_root().rglob("train.pt")
    test_file = train_file.with_name("test.pt")
    before = (test_file.read_bytes(), test_file.stat().st_mtime_ns, test_file.stat().st_ino)
    _flip_pixel_byte(train_file, stored.images)
    with pytest.warns(CacheWarning, match=f"cache {train_file} fails its integrity check"):
        again = load_dataset(name, "train", val_size=0)
    assert torch.equal(again.images, stored.images)
    assert (test_file.read_bytes(), test_file.stat().st_mtime_ns, test_file.stat().st_ino) == before
    assert read_cache(train_file) is not None
