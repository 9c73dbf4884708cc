"""Where a network looks, scored four ways: each tested by hand on maps whose answer is known."""

from __future__ import annotations

import pytest
import torch

from atcourse.metrics import (
    map_auc,
    map_similarity,
    mask_alignment,
    pointing_game,
    uniform_alignment,
)


def _square_mask(size=8, lo=2, hi=5):
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, lo:hi, lo:hi] = True  # 9 of 64 pixels
    return mask


def test_a_flat_map_scores_chance_on_every_measure():
    mask = _square_mask()
    flat = torch.ones(1, 8, 8)
    area = uniform_alignment(mask).item()
    assert mask_alignment(flat, mask).item() == pytest.approx(area)
    assert pointing_game(flat, mask).item() == pytest.approx(area)  # ties: share on the object
    assert map_auc(flat, mask).item() == pytest.approx(0.5)
    assert map_similarity(flat, torch.rand(1, 8, 8)).item() == 0.0


def test_a_map_on_the_object_scores_one_and_sharpness_alone_does_not_raise_the_auc():
    mask = _square_mask()
    perfect = mask.float()
    assert pointing_game(perfect, mask).item() == 1.0
    assert map_auc(perfect, mask).item() == pytest.approx(1.0)
    assert mask_alignment(perfect, mask).item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 8, 8, generator=g)
    # a sharper map of the same layout: mass-on-object rises, the AUC (a ranking) does not
    assert map_auc(noise**4, mask).item() == pytest.approx(map_auc(noise, mask).item())
    blurry_on_object = noise + 0.5 * perfect
    assert mask_alignment(blurry_on_object**4, mask) > mask_alignment(blurry_on_object, mask)


def test_auc_by_hand_with_ties_and_a_map_coarser_than_the_mask():
    mask = torch.tensor([[[True, True], [False, False]]])
    # object pixels 3 and 1, background 2 and 1: P(pos > neg) = (1 + 0.5 + 1 + 0) / 4
    maps = torch.tensor([[[3.0, 1.0], [2.0, 1.0]]])
    assert map_auc(maps, mask).item() == pytest.approx(0.625)
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # 2x2 map over a 4x4 mask
    fine = torch.zeros(1, 4, 4, dtype=torch.bool)
    fine[0, :2, :2] = True
    assert map_auc(coarse, fine).item() == pytest.approx(1.0)
    assert pointing_game(coarse, fine).item() == 1.0


def test_similarity_is_a_correlation_and_pools_the_larger_map():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 8, 8, generator=g)
    assert torch.allclose(map_similarity(a, a), torch.ones(2))
    assert torch.allclose(map_similarity(a, 2 * a + 3), torch.ones(2))  # scale and shift
    assert torch.allclose(map_similarity(a, -a), -torch.ones(2))
    pooled = torch.nn.functional.avg_pool2d(a.unsqueeze(1), 2)[:, 0]  # [2, 4, 4]
    assert torch.allclose(map_similarity(a, pooled), torch.ones(2), atol=1e-6)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"maps \[B,h,w\] and masks \[B,H,W\]"):
        pointing_game(torch.ones(8, 8), _square_mask())
    with pytest.raises(ValueError, match=r"two \[B,h,w\] maps"):
        map_similarity(torch.ones(1, 8, 8), torch.ones(2, 8, 8))
