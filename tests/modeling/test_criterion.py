"""Set criterion: finite losses, gradients, void weighting, deep supervision, varying C."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmmask.modeling.criterion import SetCriterion, num_masks_across_processes
from mmmask.modeling.matcher import HungarianMatcher
from mmmask.modeling.point_sample import (
    get_uncertain_point_coords_with_randomness,
    logit_uncertainty,
    point_sample,
    resize_masks,
)

WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def _criterion(num_points: int = 0, eos_coef: float = 0.1) -> SetCriterion:
    return SetCriterion(
        matcher=HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=num_points),
        weight_dict=WEIGHTS,
        eos_coef=eos_coef,
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def _targets(num_classes: int, size: int = 32):
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (2, 3):
        masks = torch.zeros(n, size, size, dtype=torch.bool)
        for i in range(n):
            y, x = torch.randint(0, size - 8, (2,), generator=g).tolist()
            masks[i, y : y + 8, x : x + 8] = True
        out.append({"masks": masks, "classes": torch.randint(0, num_classes, (n,), generator=g)})
    return out


def _outputs(num_classes: int, q: int = 6, size: int = 8, aux: int = 0, grad: bool = True):
    def one():
        return {
            "pred_logits": torch.randn(2, q, num_classes + 1, requires_grad=grad),
            "pred_masks": torch.randn(2, q, size, size, requires_grad=grad),
        }

    outs = one()
    outs["aux"] = [one() for _ in range(aux)]
    return outs


@pytest.mark.parametrize("num_points", [0, 50])
@pytest.mark.parametrize("num_classes", [3, 7])
def test_losses_finite_with_gradients_and_aux_suffixes(num_points, num_classes):
    torch.manual_seed(0)
    outs = _outputs(num_classes, aux=2)
    losses = _criterion(num_points)(outs, _targets(num_classes))
    expected = {f"{k}{s}" for k in WEIGHTS for s in ("", "_0", "_1")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for d in [outs, *outs["aux"]]:
        assert d["pred_logits"].grad is not None and d["pred_logits"].grad.abs().sum() > 0
        assert d["pred_masks"].grad is not None and d["pred_masks"].grad.abs().sum() > 0


def test_perfect_prediction_scores_better_than_wrong_masks():
    targets = _targets(4)
    crit = _criterion(num_points=0)
    good = {
        "pred_logits": torch.full((2, 3, 5), -10.0),
        "pred_masks": torch.full((2, 3, 32, 32), -10.0),
    }
    for b, t in enumerate(targets):
        n = len(t["classes"])
        good["pred_masks"][b, :n] = torch.where(t["masks"], 10.0, -10.0)
        good["pred_logits"][b, torch.arange(n), t["classes"]] = 10.0
        good["pred_logits"][b, n:, 4] = 10.0  # the rest: void
    bad = {k: v.clone() for k, v in good.items()}
    bad["pred_masks"] = -bad["pred_masks"]
    lg, lb = crit(good, targets), crit(bad, targets)
    assert lg["loss_dice"] < 0.01 and lg["loss_mask"] < 0.01 and lg["loss_ce"] < 0.01
    assert lb["loss_dice"] > 0.5 and lb["loss_mask"] > 1.0


def test_void_class_is_down_weighted_by_eos_coef():
    # one target matched to query 0; all other queries wrongly predict class 0 instead of void
    logits = torch.zeros(1, 4, 3)
    logits[0, :, 0] = 5.0
    masks = torch.zeros(1, 4, 8, 8)
    target = [{"masks": torch.ones(1, 8, 8, dtype=torch.bool), "classes": torch.tensor([0])}]
    ce = {eos: _criterion(eos_coef=eos)({"pred_logits": logits, "pred_masks": masks}, target)
          for eos in (1.0, 0.1)}
    per_query = F.cross_entropy(logits[0], torch.tensor([0, 2, 2, 2]), reduction="none")
    for eos, losses in ce.items():
        w = torch.tensor([1.0, eos, eos, eos])
        assert losses["loss_ce"].item() == pytest.approx(((per_query * w).sum() / w.sum()).item())


def test_no_targets_gives_zero_mask_losses_and_backprops():
    outs = _outputs(3)
    empty = {"masks": torch.zeros(0, 32, 32, dtype=torch.bool), "classes": torch.zeros(0).long()}
    losses = _criterion(num_points=20)(outs, [empty, empty])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert torch.isfinite(losses["loss_ce"])
    sum(losses.values()).backward()
    assert outs["pred_masks"].grad is not None


def test_weighted_and_validation():
    crit = _criterion()
    raw = {"loss_ce": torch.tensor(1.0), "loss_dice_3": torch.tensor(2.0), "x": torch.tensor(1.0)}
    w = crit.weighted(raw)
    assert set(w) == {"loss_ce", "loss_dice_3"}
    assert w["loss_ce"].item() == 2.0 and w["loss_dice_3"].item() == 10.0
    with pytest.raises(ValueError, match="valid"):
        SetCriterion(matcher=HungarianMatcher(), weight_dict={}, losses=("labels", "boxes"))
    assert num_masks_across_processes([{"classes": torch.zeros(0)}], torch.device("cpu")) == 1.0
    assert num_masks_across_processes(_targets(3), torch.device("cpu")) == 5.0


def test_point_sampling_helpers():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    centres = torch.tensor([[[0.125, 0.125], [0.875, 0.125], [0.125, 0.875]]])  # pixel centres
    assert point_sample(img, centres)[0, 0].tolist() == pytest.approx([0.0, 3.0, 12.0])
    logits = torch.full((2, 1, 16, 16), 10.0)
    logits[:, :, :, 8] = 0.0  # the uncertain column
    g = torch.Generator().manual_seed(0)
    coords = get_uncertain_point_coords_with_randomness(logits, logit_uncertainty, 40, 8.0, 0.5, g)
    assert coords.shape == (2, 40, 2) and coords.min() >= 0 and coords.max() <= 1
    picked = point_sample(logits, coords[:, :20])[:, 0]  # importance-sampled points come first
    rand = point_sample(logits, torch.rand(2, 20, 2, generator=g))[:, 0]
    assert logit_uncertainty(picked).mean() > logit_uncertainty(rand).mean()
    with pytest.raises(ValueError):
        get_uncertain_point_coords_with_randomness(logits, logit_uncertainty, 4, 0.5, 0.5)
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, :2, :2] = True
    assert resize_masks(m, (2, 2))[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
