"""A data loader that keeps the whole data set on the device.

Small images (CIFAR, ``shapes``) fit in GPU memory many times over as uint8, so the set
is moved there once and every batch is indexed, augmented and normalized on the device:
no worker processes, no host-to-device copy per batch.

Randomness comes from a CPU ``torch.Generator`` seeded from ``(seed, epoch)``: the
shuffling order and the augmentation of an epoch are a pure function of those two
numbers, whatever the device, so a run resumed at epoch ``e`` sees exactly the batches
an uninterrupted run would have seen.

Under DistributedDataParallel each process holds the whole set and takes its share of every
batch (``rank``, ``world_size``): the batch one process would see, cut into ``world_size``
consecutive parts, so the union of the ranks' batches at step ``k`` is batch ``k``, with the
same crops and flips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from atcourse.data.dataset import ImageDataset

__all__ = ["DeviceLoader", "EpochPlan", "augment_batch", "denormalize", "epoch_generator"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)``; nearby pairs give unrelated streams."""
    digest = hashlib.blake2b(f"loader/{seed}/{epoch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one epoch, drawn up front (all on the CPU).

    Attributes:
        order: int64 ``[N]``, the sample order (``arange(N)`` without shuffling).
        dy, dx: int64 ``[N]``, crop offsets in ``0..2*pad`` into the padded image, indexed
            by position in ``order`` (not by sample index). Zero without augmentation.
        flip: bool ``[N]``, horizontal flips, indexed like ``dy``.
    """

    order: torch.Tensor
    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # Mirror without repeating the edge pixel, as torch's "reflect" padding does.
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def augment_batch(
    images: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor,
    pad: int,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reflect-pad by ``pad``, crop back to ``H x W`` at ``(dy, dx)``, then flip.

    Equivalent to ``F.pad(x, [pad] * 4, mode="reflect")[..., dy:dy+H, dx:dx+W]`` per image,
    then ``flip(-1)`` where ``flip``, but done as one gather over the batch without ever
    building the padded tensor. Masks get the same crop and flip with zero padding.

    Args:
        images: ``[B, C, H, W]``, any dtype (uint8 stays uint8).
        dy, dx: int64 ``[B]`` in ``0..2*pad``; flip: bool ``[B]``.
        masks: optional bool ``[B, H, W]``.

    Returns:
        images ``[B, C, H, W]`` (channels-last memory layout) and masks ``[B, H, W]`` or None.
    """
    b, _, h, w = images.shape
    if pad >= min(h, w):
        raise ValueError(f"pad={pad} must be smaller than the image size {h}x{w}")
    dev = images.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    rows = torch.arange(h, device=dev)[None, :] + dy[:, None] - pad  # [B, H], unpadded coords
    cols = torch.arange(w, device=dev)[None, :] + dx[:, None] - pad  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None]
    r_img, c_img = _reflect(rows, h), _reflect(cols, w)
    # Advanced indices around a slice put the indexed dims first: [B, H, W, C].
    out = images[batch, :, r_img[:, :, None], c_img[:, None, :]].permute(0, 3, 1, 2)
    out_masks = None
    if masks is not None:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        r_m, c_m = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        out_masks = masks[batch, r_m[:, :, None], c_m[:, None, :]] & inside
    return out, out_masks


class DeviceLoader:
    """Batches of a whole :class:`ImageDataset` held on ``device`` as uint8.

    Iterating yields ``(images, labels)`` or, with ``with_masks``, ``(images, labels,
    masks)``: images float ``[B, 3, H, W]`` (normalized with the data set's mean/std unless
    ``normalize=False``, then in [0, 1]), labels int64 ``[B]``, masks bool ``[B, H, W]``.

    The epoch does NOT advance by itself: call :meth:`set_epoch` before each epoch.
    Iterating twice at the same epoch gives identical batches.

    Args:
        train: default for ``augment``, ``shuffle`` and ``drop_last``.
        augment: reflect-pad by ``pad`` + random crop + random horizontal flip (``flip``).
        channels_last: memory layout of the yielded images; default: True on CUDA.
        rank, world_size: this process's share of every batch, for a run over
            ``world_size`` processes: images ``rank * b`` to ``(rank + 1) * b`` of the batch
            one process would see, ``b = batch_size // world_size`` (``batch_size`` is the
            global batch and must divide evenly when the last batch is dropped). Without
            ``drop_last`` the last, smaller batch is cut as evenly as it goes; a rank whose
            share of it is empty skips it (so ``len`` may differ by one between ranks: for
            evaluation, not for training steps).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        augment: bool | None = None,
        pad: int = 4,
        flip: bool = True,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        channels_last: bool | None = None,
        with_masks: bool = False,
        normalize: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of world_size={world_size} processes")
        if with_masks and dataset.masks is None:
            raise ValueError(f"with_masks=True but data set {dataset.name!r} has no masks")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.train = train
        self.device = torch.device(device)
        self.seed = int(seed)
        self.augment = train if augment is None else augment
        self.pad = int(pad)
        self.flip = flip
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        if self.drop_last and batch_size % world_size:
            # unequal shares would weigh the ranks' gradients unequally in DDP's average
            raise ValueError(
                f"batch_size={batch_size} does not split evenly over {world_size} processes: "
                f"choose a batch size that is a multiple of {world_size} (each process takes "
                f"batch_size / {world_size} images of every batch)"
            )
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.with_masks = with_masks
        self.normalize = normalize
        self.epoch = 0
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.masks = dataset.masks.to(self.device) if with_masks else None  # type: ignore[union-attr]
        self._mean = torch.tensor(dataset.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(dataset.std, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return sum(1 for _ in self._shares())

    def _shares(self) -> Iterator[tuple[int, int]]:
        """``(start, end)`` in the epoch's order of each batch, this rank's share of it."""
        n = len(self.dataset)
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            size = min(self.batch_size, stop - start)
            lo = start + size * self.rank // self.world_size
            hi = start + size * (self.rank + 1) // self.world_size
            if hi > lo:
                yield lo, hi

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The order, crop offsets and flips of ``epoch`` (default: the current one)."""
        n = len(self.dataset)
        g = epoch_generator(self.seed, self.epoch if epoch is None else epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.augment:
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            flip = torch.rand(n, generator=g) < 0.5
            if not self.flip:
                flip = torch.zeros(n, dtype=torch.bool)
        else:
            dy = dx = torch.full((n,), self.pad, dtype=torch.long)
            flip = torch.zeros(n, dtype=torch.bool)
        return EpochPlan(order=order, dy=dy, dx=dx, flip=flip)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        plan = self.plan()
        order = plan.order.to(self.device)
        dy, dx, flips = (t.to(self.device) for t in (plan.dy, plan.dx, plan.flip))
        for start, end in self._shares():
            idx = order[start:end]
            x = self.images[idx]
            m = self.masks[idx] if self.masks is not None else None
            if self.augment:
                x, m = augment_batch(x, dy[start:end], dx[start:end], flips[start:end], self.pad, m)
            x = x.float().div_(255.0)
            if self.normalize:
                x = x.sub_(self._mean).div_(self._std)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            x = x.contiguous(memory_format=fmt)
            y = self.labels[idx]
            yield (x, y, m) if m is not None else (x, y)  # type: ignore[misc]


def denormalize(images: torch.Tensor, dataset: ImageDataset) -> torch.Tensor:
    """Undo the loader's normalization for plotting: float ``[B, 3, H, W]`` or ``[3, H, W]``
    in normalized units -> the same shape in [0, 1]."""
    mean = torch.tensor(dataset.mean, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(dataset.std, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)
