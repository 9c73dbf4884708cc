"""Tests of atcourse.data: shapes generation, the data set object, the device loader.

Image folders and CIFAR: test_data_folders.py; validation splits: test_data_splits.py;
cache integrity: test_data_cache.py; bad inputs: test_bad_inputs_data.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atcourse.data import (
    DeviceLoader,
    ImageDataset,
    augment_batch,
    balanced_subset_indices,
    denormalize,
    generate_shapes,
    load_dataset,
)
from atcourse.data import shapes as shapes_module
from atcourse.paths import cache_root

# ----------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seed_dependent() -> None:
    a = generate_shapes(40, seed=1)
    b = generate_shapes(40, seed=1)
    c = generate_shapes(40, seed=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_shapes_splits_differ() -> None:
    train = load_dataset("shapes", "train", size=30)
    test = load_dataset("shapes", "test", size=30)
    assert not torch.equal(train.images, test.images)
    # Same seed and split, different size: still a fresh, valid set.
    assert len(load_dataset("shapes", "train", size=20)) == 20
    assert train.mean == test.mean and train.std == test.std


def test_shapes_dtypes_shapes_and_balance() -> None:
    ds = load_dataset("shapes", "train", size=50, seed=3)
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (50, 3, 32, 32)
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (50,)
    assert ds.masks is not None
    assert ds.masks.dtype == torch.bool and ds.masks.shape == (50, 32, 32)
    assert ds.num_classes == 10 and len(ds) == 50 and len(ds.classes) == 10
    assert torch.equal(torch.bincount(ds.labels, minlength=10), torch.full((10,), 5))
    assert all(0.0 < m < 1.0 for m in ds.mean) and all(0.0 < s < 1.0 for s in ds.std)


def test_shapes_masks_nonempty_and_inside() -> None:
    _, _, masks = generate_shapes(200, seed=5)
    assert bool((masks.flatten(1).sum(1) > 0).all())
    # The whole object lies inside the frame: nothing touches the border.
    border = masks[:, 0, :].any(1) | masks[:, -1, :].any(1)
    border |= masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert not bool(border.any())


def test_shapes_object_visible() -> None:
    images, _, masks = generate_shapes(200, seed=6)
    x = images.float() / 255.0
    m = masks[:, None].float()
    inside = (x * m).sum((2, 3)) / m.sum((2, 3))
    outside = (x * (1 - m)).sum((2, 3)) / (1 - m).sum((2, 3))
    assert float((inside - outside).norm(dim=1).mean()) > 0.15


def test_shapes_difficulty_knobs() -> None:
    easy = generate_shapes(20, seed=0, distractors=(0, 0), noise=0.0, occlusion=0.0, clutter=0.0)
    hard = generate_shapes(20, seed=0)
    assert not torch.equal(easy[0], hard[0])
    with pytest.raises(TypeError, match="unknown shapes option"):
        generate_shapes(4, seed=0, colourfulness=3)
    with pytest.raises(ValueError):
        generate_shapes(4, seed=0, size_range=(20.0, 10.0))


def test_shapes_cache_written_and_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("shapes", "test", size=24, seed=4)
    files = sorted((cache_root() / "shapes").glob("*.pt"))
    assert len(files) == 2  # the set and its statistics
    assert not list((cache_root() / "shapes").glob("*.tmp"))

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(shapes_module, "generate_shapes", no_generation)
    second = load_dataset("shapes", "test", size=24, seed=4)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert second.masks is not None and first.masks is not None
    assert torch.equal(first.masks, second.masks)
    assert first.mean == second.mean


def test_bad_names_and_splits() -> None:
    with pytest.raises(ValueError, match="cifar10.*folder:"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("shapes", "validation", size=10)


# ----------------------------------------------------------------------------- loader


def _coordinate_dataset(n: int = 10, size: int = 16) -> ImageDataset:
    """Images whose pixels encode (row, column, sample), masks of a random pattern."""
    rows = torch.arange(size).view(1, size, 1).expand(n, size, size)
    cols = torch.arange(size).view(1, 1, size).expand(n, size, size)
    index = torch.arange(n).view(n, 1, 1).expand(n, size, size)
    images = torch.stack([rows * 8, cols * 8, index * 8], dim=1).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, size, size, generator=g) < 0.5
    return ImageDataset(
        name="coords",
        split="train",
        images=images,
        labels=torch.arange(n) % 3,
        masks=masks,
        classes=["a", "b", "c"],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


def _manual(img: torch.Tensor, mask: torch.Tensor, dy: int, dx: int, flip: bool, pad: int):
    h, w = img.shape[-2:]
    padded = F.pad(img.float()[None], [pad] * 4, mode="reflect")[0]
    crop = padded[:, dy : dy + h, dx : dx + w]
    mpad = F.pad(mask.float()[None], [pad] * 4)[0]  # zero padding for masks
    mcrop = mpad[dy : dy + h, dx : dx + w] > 0.5
    if flip:
        crop, mcrop = crop.flip(-1), mcrop.flip(-1)
    return crop, mcrop


def test_loader_crop_flip_and_masks_match_manual_pad_crop() -> None:
    ds = _coordinate_dataset()
    loader = DeviceLoader(ds, 4, train=True, seed=7, with_masks=True, normalize=False, pad=4)
    loader.set_epoch(3)
    plan = loader.plan()
    assert bool((plan.dy != 4).any() or (plan.dx != 4).any())  # really shifted somewhere
    seen = 0
    for b, (x, y, m) in enumerate(loader):
        for k in range(x.shape[0]):
            pos = b * loader.batch_size + k
            i = int(plan.order[pos])
            exp_img, exp_mask = _manual(
                ds.images[i], ds.masks[i], int(plan.dy[pos]), int(plan.dx[pos]),
                bool(plan.flip[pos]), 4,
            )  # fmt: skip
            assert torch.allclose(x[k] * 255.0, exp_img, atol=1e-3)
            assert torch.equal(m[k], exp_mask)
            assert int(y[k]) == int(ds.labels[i])
            seen += 1
    assert seen == 8  # 10 samples, batches of 4, last partial batch dropped in train mode


def test_augment_batch_flip_and_identity() -> None:
    ds = _coordinate_dataset(n=3)
    same = torch.full((3,), 2)
    no = torch.zeros(3, dtype=torch.bool)
    out, masks = augment_batch(ds.images, same, same, no, pad=2, masks=ds.masks)
    assert torch.equal(out, ds.images) and torch.equal(masks, ds.masks)
    out, masks = augment_batch(ds.images, same, same, ~no, pad=2, masks=ds.masks)
    assert torch.equal(out, ds.images.flip(-1)) and torch.equal(masks, ds.masks.flip(-1))
    # A shift by one row: row r of the output is row r + 1 of the input.
    out, _ = augment_batch(ds.images, same + 1, same, no, pad=2)
    assert torch.equal(out[:, :, :-1], ds.images[:, :, 1:])


def test_loader_reproducible_per_epoch() -> None:
    ds = _coordinate_dataset(n=20)
    a = DeviceLoader(ds, 5, train=True, seed=1)
    b = DeviceLoader(ds, 5, train=True, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    again = list(a)
    other = list(b)
    for (x1, y1), (x2, y2), (x3, y3) in zip(first, again, other, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1, x3) and torch.equal(y1, y3)
    a.set_epoch(3)
    order2 = DeviceLoader(ds, 5, train=True, seed=1).plan(2).order
    assert not torch.equal(a.plan().order, order2)


def test_loader_eval_mode_keeps_order_and_pixels() -> None:
    ds = _coordinate_dataset(n=10)
    loader = DeviceLoader(ds, 4, train=False)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels, ds.labels)
    assert torch.allclose(denormalize(images, ds), ds.images.float() / 255.0, atol=1e-6)
    assert images.dtype == torch.float32 and images.shape == (10, 3, 16, 16)


def test_loader_len_and_options() -> None:
    ds = _coordinate_dataset(n=10)
    assert len(DeviceLoader(ds, 4, train=True)) == 2
    assert len(DeviceLoader(ds, 4, train=True, drop_last=False)) == 3
    assert len(DeviceLoader(ds, 5, train=True)) == 2
    x, _ = next(iter(DeviceLoader(ds, 4, train=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(DeviceLoader(ds, 4, train=False, normalize=False)))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    no_masks = ds.subset([0, 1])
    no_masks.masks = None
    with pytest.raises(ValueError, match="masks"):
        DeviceLoader(no_masks, 2, train=True, with_masks=True)


def test_loader_on_shapes_with_masks() -> None:
    ds = load_dataset("shapes", "train", size=20)
    x, y, m = next(iter(DeviceLoader(ds, 8, train=True, with_masks=True)))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,) and m.shape == (8, 32, 32)
    assert abs(float(x.mean())) < 1.0  # normalized


def test_balanced_subset() -> None:
    labels = torch.tensor([0] * 50 + [1] * 50 + [2] * 3)
    idx = balanced_subset_indices(labels, 30, seed=0)
    counts = torch.bincount(labels[idx], minlength=3)
    assert len(idx) == 30 and int(counts[2]) == 3 and abs(int(counts[0] - counts[1])) <= 1
    assert torch.equal(idx, balanced_subset_indices(labels, 30, seed=0))
    assert bool((idx[1:] > idx[:-1]).all())


def test_select_classes_keeps_and_relabels() -> None:
    ds = load_dataset("shapes", "test", size=200)
    sub = ds.select_classes([7, 2])
    assert sub.classes == [ds.classes[7], ds.classes[2]]
    keep = (ds.labels == 7) | (ds.labels == 2)
    assert len(sub) == int(keep.sum())
    assert torch.equal(sub.images, ds.images[keep])
    assert torch.equal(sub.masks, ds.masks[keep])
    assert torch.equal(sub.labels, (ds.labels[keep] == 2).long())  # 7 -> 0, 2 -> 1
    assert sub.mean == ds.mean and sub.num_classes == 2
    assert sub.name == "shapes[7,2]"  # run records keep it as the task trained on
    with pytest.raises(ValueError, match="out of range"):
        ds.select_classes([3, 10])
    with pytest.raises(ValueError, match="distinct"):
        ds.select_classes([1, 1])
