"""``shapes``: the built-in data set, generated on the fly.

32x32 RGB images in 10 classes. Each image holds ONE class-defining shape (circle,
square, triangle, star, cross, ring, diamond, arrow, crescent, ell) at a random place,
size, rotation and colour, on a cluttered background:

- a smooth random colour gradient plus low-frequency colour noise;
- 3-6 distractors belonging to no class (thin line segments and small blobs), some of
  them in the object's own colour family, drawn behind the object;
- sometimes a small partial occluder in front of the object's edge;
- Gaussian pixel noise.

Because the object's pixels are known exactly, every image comes with a mask (bool
``[32, 32]``) of the object's visible pixels: the ground truth for where a network
should look, which attention maps can be scored against.

Everything is drawn from one ``torch.Generator`` and rendered in batches with signed
distance functions on a pixel grid (about one pixel of anti-aliasing), with no Python
loop over images. Generating the default 20,000-image train split takes about 3 s on
2 idle CPU cores (about 5 s on one); sets are cached under ``cache_root()/shapes/``, and
a cached set loads in a fraction of a second.

Calibration (the defaults of :class:`Difficulty`), measured in the ``lab`` profile on a
2-core CPU (5,000 training and 2,000 test images, SGD lr 0.05, batch 64, cosine
schedule, seed 0, notebook 00's run): WRN-16-2 teacher, 15 epochs: 95.6% test accuracy;
WRN-16-1 trained alone, 12 epochs: 51.8% (59% in an earlier calibration run with
another initialisation); chance is 10%. The teacher clearly beats the student, which
leaves room for distillation, and both are far above chance. The first, harder
settings (3-6 distractors, objects 9-18 px, clutter 0.35) held WRN-16-1 at 20% after
750 steps: too slow for a lab.

Difficulty knobs (keyword arguments of :func:`generate_shapes`, see :class:`Difficulty`):
number of distractors, pixel noise, object size, minimum colour contrast between object
and background, share of same-coloured distractors, occluder probability, background
clutter.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from atcourse.data.images import ImageDataset, _load_cache, atomic_save, channel_stats
from atcourse.paths import cache_root

__all__ = [
    "CLASSES",
    "DEFAULT_SIZES",
    "Difficulty",
    "SHAPES_VERSION",
    "IMAGE_SIZE",
    "generate_shapes",
    "load_shapes",
    "split_seed",
]

# Part of every cache key: bump whenever the rendering changes.
SHAPES_VERSION = "shapes-v2"
IMAGE_SIZE = 32
CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "arrow",
    "crescent",
    "ell",
)
DEFAULT_SIZES = {"train": 20_000, "test": 4_000}
# Images rendered per batch. Fixed, because the random stream is consumed batch by batch:
# changing it would change the images a seed gives.
_CHUNK = 2048
# Train-split images generated to compute the normalization statistics.
_STATS_SAMPLE = 2000


@dataclass(frozen=True)
class Difficulty:
    """Knobs that make ``shapes`` harder or easier.

    Attributes:
        distractors: (min, max) number of distractors (segments and blobs) per image.
        noise: std of the Gaussian pixel noise, in [0, 1] units.
        size_range: (min, max) object size in pixels (diameter of its bounding circle).
        contrast: minimum RGB distance (Euclidean, [0, 1] units) between the object's
            colour and the mean background colour under it.
        same_colour: probability that a distractor takes the object's colour family.
        occlusion: probability that a small box covers part of the object's edge.
        clutter: amplitude of the low-frequency background noise.
    """

    # Calibrated for the lab profile (see the module docstring): harder settings (the
    # first version had 3-6 distractors, objects 9-18 px, clutter 0.35) kept WRN-16-1
    # near chance for the first ~700 steps, too slow for a lab on a laptop CPU.
    distractors: tuple[int, int] = (2, 4)
    noise: float = 0.03
    size_range: tuple[float, float] = (12.0, 22.0)
    contrast: float = 0.35
    same_colour: float = 0.25
    occlusion: float = 0.15
    clutter: float = 0.15

    def __post_init__(self) -> None:
        lo, hi = self.distractors
        if not 0 <= lo <= hi:
            raise ValueError(f"distractors must be (min, max) with 0 <= min <= max, got {lo, hi}")
        smin, smax = self.size_range
        if not 2.0 <= smin <= smax <= IMAGE_SIZE - 4:
            raise ValueError(f"size_range must satisfy 2 <= min <= max <= 28, got {smin, smax}")
        for name in ("noise", "contrast", "clutter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("same_colour", "occlusion"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> Difficulty:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown shapes option(s) {unknown}; valid: {sorted(known)}")
        # Lists (from JSON or a config) become the tuples the cache key expects.
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        return cls(**clean)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- geometry
# Signed distance functions in the object's own frame: (u, v) are pixel offsets from the
# object's centre, rotated and divided by its radius, so every shape fits the unit disc.
# Negative inside, positive outside, in units of the radius.


def _disc(u: torch.Tensor, v: torch.Tensor, radius: float) -> torch.Tensor:
    return torch.hypot(u, v) - radius


def _box(
    u: torch.Tensor, v: torch.Tensor, hx: float | torch.Tensor, hy: float | torch.Tensor
) -> torch.Tensor:
    qx, qy = u.abs() - hx, v.abs() - hy
    outside = torch.hypot(qx.clamp_min(0), qy.clamp_min(0))
    return outside + torch.maximum(qx, qy).clamp_max(0)


def _polygon(u: torch.Tensor, v: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to a simple polygon, ``vertices`` ``[K, 2]`` in order.

    Distance: to the nearest edge; sign: even-odd crossing test. ``u``, ``v`` ``[M, P]``.
    """
    a = vertices
    b = torch.roll(vertices, -1, dims=0)
    edge = b - a  # [K, 2]
    pu, pv = u[..., None], v[..., None]  # [M, P, 1]
    wu, wv = pu - a[:, 0], pv - a[:, 1]  # [M, P, K]
    t = ((wu * edge[:, 0] + wv * edge[:, 1]) / (edge * edge).sum(1)).clamp(0, 1)
    dist = torch.hypot(wu - t * edge[:, 0], wv - t * edge[:, 1]).amin(-1)
    straddles = (a[:, 1] > pv) != (b[:, 1] > pv)
    # Where the edge is horizontal `straddles` is False, so the division's inf is ignored.
    x_cross = a[:, 0] + edge[:, 0] * (pv - a[:, 1]) / edge[:, 1]
    inside = (straddles & (pu < x_cross)).sum(-1) % 2 == 1
    return torch.where(inside, -dist, dist)


def _regular(n: int, radii: tuple[float, ...], start: float = math.pi / 2) -> torch.Tensor:
    k = torch.arange(n * len(radii), dtype=torch.float32)
    angle = start + k * (2 * math.pi / (n * len(radii)))
    r = torch.tensor(radii * n, dtype=torch.float32)
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)


_TRIANGLE = _regular(3, (1.0,))
_STAR = _regular(5, (1.0, 0.42))
_DIAMOND = torch.tensor([[1.0, 0.0], [0.0, 0.55], [-1.0, 0.0], [0.0, -0.55]])
_ARROW = torch.tensor(
    [[-0.95, -0.2], [0.1, -0.2], [0.1, -0.62], [0.95, 0.0], [0.1, 0.62], [0.1, 0.2], [-0.95, 0.2]]
)
_ELL = 0.92 * torch.tensor(
    [[-0.55, -0.85], [-0.05, -0.85], [-0.05, 0.35], [0.6, 0.35], [0.6, 0.85], [-0.55, 0.85]]
)

_SDF: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    lambda u, v: _disc(u, v, 0.92),
    lambda u, v: _box(u, v, 0.68, 0.68),
    lambda u, v: _polygon(u, v, _TRIANGLE),
    lambda u, v: _polygon(u, v, _STAR),
    lambda u, v: torch.minimum(_box(u, v, 0.95, 0.27), _box(u, v, 0.27, 0.95)),
    lambda u, v: (torch.hypot(u, v) - 0.7).abs() - 0.25,
    lambda u, v: _polygon(u, v, _DIAMOND),
    lambda u, v: _polygon(u, v, _ARROW),
    lambda u, v: torch.maximum(_disc(u, v, 0.95), -_disc(u - 0.4, v, 0.78)),
    lambda u, v: _polygon(u, v, _ELL),
)
assert len(_SDF) == len(CLASSES)


def _coverage(sdf_px: torch.Tensor) -> torch.Tensor:
    """Fraction of a pixel covered, from the signed distance at its centre in pixels.

    A linear ramp one pixel wide: cheap anti-aliasing, exact for straight edges.
    """
    return (0.5 - sdf_px).clamp(0.0, 1.0)


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


# ----------------------------------------------------------------------------- rendering


@functools.cache
def _upsampler(n: int, size: int) -> torch.Tensor:
    """``[size, n]`` matrix ``A`` with ``A @ X @ A.T`` = bicubic upsampling of ``X`` ``[n, n]``.

    Bicubic interpolation is separable, so each column is the upsampled image of a unit
    impulse in one column of a constant-row image. Two small matmuls beat
    ``F.interpolate`` several times over on a batch of 4x4 noise images.
    """
    basis = torch.eye(n).view(n, 1, 1, n).expand(n, 1, n, n)
    rows = F.interpolate(basis, size=(size, size), mode="bicubic", align_corners=False)
    return rows[:, 0, 0, :].T.contiguous()


def _render(
    labels: torch.Tensor, g: torch.Generator, d: Difficulty
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one batch: images float ``[M, 3, 32, 32]`` in [0, 1], masks bool ``[M, 32, 32]``."""
    m, s = labels.shape[0], IMAGE_SIZE
    # Pixel-centre coordinates as a row [1, 1, S] and a column [1, S, 1]: anything linear
    # in x and y is then computed on [M, 1, S] and [M, S, 1] pieces and broadcast into
    # [M, S, S] by one final operation, which halves the work on full-size tensors.
    centres = torch.arange(s, dtype=torch.float32) + 0.5
    xs, ys = centres.view(1, 1, s), centres.view(1, s, 1)

    def per_image(t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, 1, 1)

    # The object: its bounding circle stays one pixel clear of the border.
    radius = _uniform(g, *d.size_range, m) / 2
    cx = radius + 1 + torch.rand(m, generator=g) * (s - 2 * radius - 2)
    cy = radius + 1 + torch.rand(m, generator=g) * (s - 2 * radius - 2)
    theta = _uniform(g, 0.0, 2 * math.pi, m)
    dx, dy = (xs - per_image(cx)) / per_image(radius), (ys - per_image(cy)) / per_image(radius)
    cos, sin = per_image(torch.cos(theta)), per_image(torch.sin(theta))
    u = dx * cos + dy * sin  # [M, S, S], object frame in units of the radius
    v = dy * cos - dx * sin
    sdf = torch.empty(m, s, s)
    for k, fn in enumerate(_SDF):  # ten class-wise batches, not a loop over images
        sel = labels == k
        if bool(sel.any()):
            sdf[sel] = fn(u[sel], v[sel])
    sdf_px = sdf * per_image(radius)
    obj_cov = _coverage(sdf_px)  # [M, S, S]

    # Background: a linear gradient between two random colours plus smooth noise.
    c0, c1 = torch.rand(m, 3, generator=g), torch.rand(m, 3, generator=g)
    phi = _uniform(g, 0.0, 2 * math.pi, m)
    ramp = (xs - s / 2) * per_image(torch.cos(phi) / s) + (
        (ys - s / 2) * per_image(torch.sin(phi) / s) + 0.5
    )
    img = torch.lerp(c0[:, :, None, None], c1[:, :, None, None], ramp[:, None])  # [M, 3, S, S]
    coarse = torch.rand(m, 3, 4, 4, generator=g) * 2 - 1
    up = _upsampler(4, s)
    smooth = up @ coarse @ up.T  # bicubic upsampling to [M, 3, S, S], as two matmuls
    img = img.add_(smooth, alpha=d.clutter).clamp_(0, 1)

    # Object colour: random, pushed away from the background under it when too close.
    weight = obj_cov / obj_cov.sum((1, 2), keepdim=True).clamp_min(1e-6)
    local = (img * weight[:, None]).sum((2, 3))  # [M, 3]
    colour = torch.rand(m, 3, generator=g)
    diff = colour - local
    dist = diff.norm(dim=1, keepdim=True)
    direction = diff / dist.clamp_min(1e-6)
    away = (local + d.contrast * direction).clamp(0, 1)
    # Clamping can undo the push near the colour cube's faces: then go the other way.
    back = (local - d.contrast * direction).clamp(0, 1)
    pushed = torch.where(
        (away - local).norm(dim=1, keepdim=True) >= (back - local).norm(dim=1, keepdim=True),
        away,
        back,
    )
    colour = torch.where(dist < d.contrast, pushed, colour)

    def distractor_colour(n_shape: tuple[int, ...]) -> torch.Tensor:
        # Same colour family as the object (small jitter) or any colour.
        family = colour.view(m, *([1] * (len(n_shape) - 1)), 3) + 0.08 * torch.randn(
            *n_shape, 3, generator=g
        )
        other = torch.rand(*n_shape, 3, generator=g)
        same = torch.rand(*n_shape, 1, generator=g) < d.same_colour
        return torch.where(same, family, other).clamp(0, 1)

    # Distractors, behind the object: thin segments and small blobs.
    lo, hi = d.distractors
    slots = hi
    if slots > 0:
        count = torch.randint(lo, hi + 1, (m,), generator=g)
        active = torch.arange(slots)[None, :] < count[:, None]  # [M, D]
        is_segment = torch.rand(m, slots, generator=g) < 0.5
        p0 = torch.rand(m, slots, 2, generator=g) * s
        length = _uniform(g, 6.0, 20.0, m, slots)
        angle = _uniform(g, 0.0, 2 * math.pi, m, slots)
        width = _uniform(g, 0.7, 1.4, m, slots)
        blob_r = _uniform(g, 1.0, 2.5, m, slots)
        d_col = distractor_colour((m, slots))
        # A blob is a zero-length segment as thick as its diameter, so one distance serves
        # both; an unused slot gets a hugely negative thickness, so it covers nothing.
        length = torch.where(is_segment, length, 0.0)
        half_thick = torch.where(is_segment, width / 2, blob_r)
        half_thick = torch.where(active, half_thick, -1e3)
        ex_all, ey_all = length * torch.cos(angle), length * torch.sin(angle)
        inv_len2 = 1.0 / (ex_all * ex_all + ey_all * ey_all).clamp_min(1e-6)
        for j in range(slots):  # a handful of slots, each batched over all images
            ex, ey = per_image(ex_all[:, j]), per_image(ey_all[:, j])
            wx, wy = xs - per_image(p0[:, j, 0]), ys - per_image(p0[:, j, 1])
            inv = per_image(inv_len2[:, j])
            t = (wx * (ex * inv) + wy * (ey * inv)).clamp_(0, 1)  # [M, S, S]
            dist = torch.hypot(wx - t * ex, wy - t * ey)
            cov = _coverage(dist - per_image(half_thick[:, j]))
            img = torch.lerp(img, d_col[:, j, :, None, None], cov[:, None])

    img = torch.lerp(img, colour[:, :, None, None], obj_cov[:, None])

    # Partial occluder: a small box centred near the object's edge, in front of it.
    present = torch.rand(m, generator=g) < d.occlusion
    o_angle = _uniform(g, 0.0, 2 * math.pi, m)
    o_dist = radius * _uniform(g, 0.55, 0.95, m)
    ox = per_image(cx + o_dist * torch.cos(o_angle))
    oy = per_image(cy + o_dist * torch.sin(o_angle))
    # Scaled with the object so that it hides a part, never most, of a small shape.
    half = radius[:, None] * _uniform(g, 0.2, 0.35, m, 2)
    o_cov = _coverage(_box(xs - ox, ys - oy, per_image(half[:, 0]), per_image(half[:, 1])))
    o_col = distractor_colour((m,))
    obj_px = sdf_px < 0
    # Never hide the whole object: its mask must stay non-empty.
    visible_if_occluded = obj_px & (o_cov < 0.5)
    present &= visible_if_occluded.flatten(1).any(1)
    o_cov = o_cov * per_image(present.float())
    img = torch.lerp(img, o_col[:, :, None, None], o_cov[:, None])
    mask = obj_px & (o_cov < 0.5)

    img = img.add_(torch.randn(img.shape, generator=g), alpha=d.noise)
    return img.clamp_(0, 1), mask


def generate_shapes(
    n: int, *, seed: int, **difficulty: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` shapes images, deterministically from ``seed``.

    Keyword arguments are :class:`Difficulty` fields. Labels are class-balanced (counts
    differ by at most one) and shuffled.

    Returns:
        images: uint8 ``[n, 3, 32, 32]``.
        labels: int64 ``[n]`` in ``0..9`` (see ``CLASSES``).
        masks: bool ``[n, 32, 32]``, the object's visible pixels (never empty).
    """
    d = Difficulty.from_kwargs(**difficulty)
    g = torch.Generator().manual_seed(int(seed) % (1 << 63))
    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    images = torch.empty(n, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    masks = torch.empty(n, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        img, mask = _render(labels[start:stop], g, d)
        images[start:stop] = img.mul(255).round_().to(torch.uint8)
        masks[start:stop] = mask
    return images, labels, masks


# ----------------------------------------------------------------------------- loading


def split_seed(seed: int, split: str) -> int:
    """The generator seed of one split: train and test never share a stream."""
    digest = hashlib.blake2b(f"shapes/{seed}/{split}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _cache_file(kind: str, n: int, seed: int, d: Difficulty) -> Path:
    """Cache file keyed by the version string and every generation parameter."""
    params = {"version": SHAPES_VERSION, "kind": kind, "n": n, "seed": seed, **asdict(d)}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "shapes" / f"{SHAPES_VERSION}-{kind}-n{n}-{key}.pt"


def _cached_generate(kind: str, n: int, seed: int, d: Difficulty) -> dict[str, torch.Tensor]:
    path = _cache_file(kind, n, seed, d)
    cached = _load_cache(path)
    if cached is not None:
        return cached
    images, labels, masks = generate_shapes(n, seed=seed, **asdict(d))
    payload = {"images": images, "labels": labels, "masks": masks}
    atomic_save(payload, path)
    return payload


def _stats(seed: int, d: Difficulty) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std from a fixed-size train sample, so every split and size shares them."""
    path = _cache_file("stats", _STATS_SAMPLE, split_seed(seed, "train"), d)
    cached = _load_cache(path)
    if cached is not None:
        return tuple(cached["mean"]), tuple(cached["std"])
    images, _, _ = generate_shapes(_STATS_SAMPLE, seed=split_seed(seed, "train"), **asdict(d))
    mean, std = channel_stats(images)
    atomic_save({"mean": mean, "std": std}, path)
    return mean, std


def load_shapes(
    split: str = "train", seed: int = 0, size: int | None = None, **difficulty: object
) -> ImageDataset:
    """One split of ``shapes`` (cached): ``size`` images, default 20,000 train / 4,000 test.

    Images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``, masks bool ``[N, 32, 32]``.
    ``mean``/``std`` come from a 2,000-image sample of the train split with the same seed
    and difficulty, so they do not depend on ``size``.
    """
    if split not in DEFAULT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n = DEFAULT_SIZES[split] if size is None else int(size)
    if n <= 0:
        raise ValueError(f"size must be positive, got {n}")
    d = Difficulty.from_kwargs(**difficulty)
    payload = _cached_generate(split, n, split_seed(seed, split), d)
    mean, std = _stats(seed, d)
    return ImageDataset(
        name="shapes",
        split=split,
        images=payload["images"],
        labels=payload["labels"],
        masks=payload["masks"],
        classes=list(CLASSES),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )
