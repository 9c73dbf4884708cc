"""How one batch of ``shapes`` images is drawn: signed distance functions on a pixel grid.

Every shape is a signed distance function (SDF) in the object's own frame; a pixel's
coverage is a one-pixel linear ramp of the distance at its centre (cheap anti-aliasing).
:func:`draw_batch` renders a whole batch with tensor operations, no Python loop over
images, consuming a ``torch.Generator`` in a fixed order: the same generator state gives
the same images. :mod:`atcourse.data.shapes` turns this into the data set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["SHAPE_SDFS", "draw_batch"]

# ----------------------------------------------------------------------------- geometry
# Signed distance functions in the object's own frame: (u, v) are pixel offsets from the
# object's centre, rotated and divided by its radius, so every shape fits the unit disc.
# Negative inside, positive outside, in units of the radius.

#: The side of every ``shapes`` image, in pixels.
IMAGE_SIZE = 32


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

    # Calibrated for the lab profile (see atcourse.data.shapes): with more clutter (2-4
    # distractors, objects 12-22 px) a student alone was still far from its plateau after
    # the lab's budget on a 2-core CPU.
    distractors: tuple[int, int] = (0, 2)
    noise: float = 0.03
    size_range: tuple[float, float] = (14.0, 24.0)
    contrast: float = 0.35
    same_colour: float = 0.1
    occlusion: float = 0.1
    clutter: float = 0.1

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
SHAPE_SDFS = _SDF  # one per class, in the order of shapes.CLASSES


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


def draw_batch(
    labels: torch.Tensor, g: torch.Generator, d: Difficulty, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one batch of ``M = len(labels)`` images, consuming ``g``.

    Args:
        labels: int64 ``[M]``, the class of each image (index into ``SHAPE_SDFS``).
        g: the generator every random choice is drawn from, in a fixed order.
        d: the difficulty knobs.
        size: image side ``S`` in pixels.

    Returns:
        images float ``[M, 3, S, S]`` in [0, 1] and masks bool ``[M, S, S]`` (the object's
        visible pixels).
    """
    m, s = labels.shape[0], size
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
