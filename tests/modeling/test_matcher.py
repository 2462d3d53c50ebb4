"""Hungarian matching: exact against brute force, and the obvious assignment on a crafted case."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mmmask.modeling.matcher import (
    HungarianMatcher,
    hungarian_match,
    pairwise_dice,
    pairwise_sigmoid_bce,
)


def _brute_force_min(cost: torch.Tensor) -> float:
    q, n = cost.shape
    if q >= n:  # every ordered choice of rows for columns 0..n-1
        choices = itertools.permutations(range(q), n)
        return min(sum(cost[r, c].item() for c, r in enumerate(p)) for p in choices)
    choices = itertools.permutations(range(n), q)  # every ordered choice of columns for rows
    return min(sum(cost[r, c].item() for r, c in enumerate(p)) for p in choices)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (5, 5), (6, 3), (3, 6), (6, 1), (2, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_match_equals_brute_force(shape, seed):
    g = torch.Generator().manual_seed(seed)
    cost = torch.randn(*shape, generator=g)
    rows, cols = hungarian_match(cost)
    k = min(shape)
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    assert len(rows) == len(cols) == k
    assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
    assert torch.all(rows[1:] > rows[:-1])  # ascending rows
    assert cost[rows, cols].sum().item() == pytest.approx(_brute_force_min(cost), abs=1e-5)


def test_hungarian_match_rejects_non_matrix_and_survives_non_finite():
    with pytest.raises(ValueError, match="2-D"):
        hungarian_match(torch.zeros(2, 2, 2))
    cost = torch.tensor([[0.0, float("nan")], [float("inf"), 0.0]])
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]


def test_pairwise_costs_match_elementwise_definitions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 30, generator=g)
    targets = (torch.rand(3, 30, generator=g) > 0.5).float()
    bce = pairwise_sigmoid_bce(logits, targets)
    dice = pairwise_dice(logits, targets)
    assert bce.shape == dice.shape == (4, 3)
    for q in range(4):
        for n in range(3):
            ref = F.binary_cross_entropy_with_logits(logits[q], targets[n])
            assert bce[q, n].item() == pytest.approx(ref.item(), rel=1e-5)
            p = logits[q].sigmoid()
            ref_dice = 1 - (2 * (p * targets[n]).sum() + 1) / (p.sum() + targets[n].sum() + 1)
            assert dice[q, n].item() == pytest.approx(ref_dice.item(), rel=1e-5)


def _crafted_case():
    """Query 3 predicts target 0 (left half, class 2); query 1 target 1 (right half, class 0)."""
    h = w = 16
    left = torch.zeros(h, w, dtype=torch.bool)
    left[:, : w // 2] = True
    right = ~left
    pred_masks = torch.full((1, 4, h // 2, w // 2), -8.0)  # predictions at a quarter of the area
    pred_masks[0, 3, :, : w // 4] = 8.0
    pred_masks[0, 1, :, w // 4 :] = 8.0
    pred_logits = torch.zeros(1, 4, 4)  # C = 3 classes + void
    pred_logits[0, 3, 2] = 6.0
    pred_logits[0, 1, 0] = 6.0
    pred_logits[0, 0, 3] = 6.0  # void
    pred_logits[0, 2, 3] = 6.0
    target = {"masks": torch.stack([left, right]), "classes": torch.tensor([2, 0])}
    return pred_logits, pred_masks, [target]


@pytest.mark.parametrize("num_points", [0, 200])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0, 0, 1)])
def test_matcher_picks_the_obvious_assignment(num_points, weights):
    torch.manual_seed(0)
    matcher = HungarianMatcher(
        cost_class=weights[0], cost_mask=weights[1], cost_dice=weights[2], num_points=num_points
    )
    (rows, cols), = matcher(*_crafted_case())
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 1, 3: 0}


def test_matcher_empty_targets_and_errors():
    logits, masks, _ = _crafted_case()
    empty = {"masks": torch.zeros(0, 16, 16, dtype=torch.bool), "classes": torch.zeros(0).long()}
    (rows, cols), = HungarianMatcher()(logits, masks, [empty])
    assert rows.numel() == 0 and cols.numel() == 0
    bad = {"masks": torch.ones(1, 16, 16, dtype=torch.bool), "classes": torch.tensor([3])}
    with pytest.raises(ValueError, match="class ids"):
        HungarianMatcher()(logits, masks, [bad])
    with pytest.raises(ValueError, match="targets"):
        HungarianMatcher()(logits, masks, [empty, empty])
    with pytest.raises(ValueError, match="non-zero"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
