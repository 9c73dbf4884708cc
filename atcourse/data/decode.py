"""Encoded images (JPEG, PNG...) to one uint8 tensor, naming any file that fails.

JPEGs go through ``torchvision.io.decode_jpeg`` in batches (libjpeg-turbo, about 3x
faster than Pillow on CIFAR-sized images); everything else, and any batch torchvision
refuses, through Pillow. An image neither can decode stops the load with a
:class:`~atcourse.data.dataset.DamagedFileError` naming its file (inside an archive: the
archive and the member) and what to do about it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from atcourse.data.dataset import DamagedFileError

__all__ = ["IMAGE_EXTENSIONS", "decode_images", "is_image_name"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
_JPEG_BATCH = 4096


def is_image_name(name: str) -> bool:
    """True for a file name with an image extension that is not hidden."""
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
            # No such decoder, an odd JPEG variant, or a damaged file somewhere in the
            # batch: Pillow decodes the batch one by one and names any bad file.
            return None


def _decode_pillow(blob: bytes, name: str, fix: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            img.load()  # Pillow reads lazily: truncation only shows here
            rgb = img.convert("RGB")
    except Exception as err:
        # Pillow's messages name a BytesIO object, or nothing: say which file and why.
        if isinstance(err, UnidentifiedImageError):
            problem = "is not an image Pillow can identify (corrupt header or not an image)"
        elif "truncat" in str(err).lower():
            problem = f"is truncated ({type(err).__name__}: {err})"
        else:
            problem = f"is not a readable image ({type(err).__name__}: {err})"
        raise DamagedFileError(f"cannot decode image {name}: it {problem}. {fix}", name) from err
    arr = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return arr.view(rgb.size[1], rgb.size[0], 3).permute(2, 0, 1)


def decode_images(
    blobs: Sequence[bytes],
    names: Sequence[str],
    image_size: int | None,
    fix: str = "Remove it or replace it with a good copy.",
) -> torch.Tensor:
    """Decode encoded images to uint8 ``[N, 3, H, W]``.

    All images keep their size when they share one and ``image_size`` is None; otherwise
    each is resized (shorter side) and center-cropped to ``image_size`` (32 when None).
    ``names[i]`` says where ``blobs[i]`` came from. Raises DamagedFileError naming the
    first image that cannot be decoded, followed by ``fix`` (what to do about it).
    """
    from PIL import Image

    decoded: list[torch.Tensor | None] = [None] * len(blobs)
    jpeg_idx = [i for i, b in enumerate(blobs) if b[:3] == b"\xff\xd8\xff"]
    # Batched libjpeg-turbo decoding is the fast path for JPEG trees such as CIFAR.
    for start in range(0, len(jpeg_idx), _JPEG_BATCH):
        chunk = jpeg_idx[start : start + _JPEG_BATCH]
        out = _decode_jpeg_batch([blobs[i] for i in chunk])
        if out is None:
            continue  # this chunk goes through Pillow below
        for i, t in zip(chunk, out, strict=True):
            decoded[i] = t
    for i, blob in enumerate(blobs):
        if decoded[i] is None:
            decoded[i] = _decode_pillow(blob, names[i], fix)
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
