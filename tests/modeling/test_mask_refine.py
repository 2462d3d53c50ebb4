"""Guided-filter mask refinement (its place in the model: test_open_vocab.py)."""

import pytest
import torch
import torch.nn.functional as F

from mmmask.config import get_cfg
from mmmask.modeling.mask_refine import (MaskRefiner, box_filter, guided_filter,
                                          refine_mask_logits)


def test_box_filter_is_a_border_normalised_mean():
    x = torch.rand(1, 2, 9, 7)
    out = box_filter(x, 1)
    assert torch.allclose(out[0, :, 4, 3], x[0, :, 3:6, 2:5].mean((-2, -1)))
    assert torch.allclose(out[0, :, 0, 0], x[0, :, :2, :2].mean((-2, -1)))  # corner: 4 pixels
    assert torch.allclose(box_filter(torch.ones(1, 1, 5, 5), 2), torch.ones(1, 1, 5, 5))


def test_guided_filter_keeps_constants_and_linear_functions_of_the_guide():
    torch.manual_seed(0)
    guide = torch.rand(3, 24, 20)
    const = torch.full((2, 24, 20), 0.3)
    assert torch.allclose(guided_filter(guide, const, 2, 1e-3), const, atol=1e-5)
    linear = (0.5 * guide[0] - 0.2 * guide[2] + 0.1)[None]  # q = a . I + b exactly
    assert torch.allclose(guided_filter(guide, linear, 3, 1e-6), linear, atol=1e-3)


def test_guided_filter_moves_a_blurred_outline_onto_the_guides_edge():
    truth = torch.zeros(48, 48)
    truth[10:37, 21:27] = 1  # a thin cross: its arms are 1.5 cells of a stride-4 decoder wide
    truth[20:26, 9:40] = 1
    guide = torch.stack([0.2 + 0.6 * truth, 0.5 - 0.3 * truth, 0.4 + 0.1 * truth])
    guide = guide + 0.02 * torch.randn(3, 48, 48, generator=torch.Generator().manual_seed(1))
    # the mask a stride-4 decoder gives: the object at 12 x 12, upsampled bilinearly
    coarse = F.interpolate(truth[None, None], size=(12, 12), mode="area")
    blurred = F.interpolate(coarse, size=(48, 48), mode="bilinear", align_corners=False)[0]
    refined = guided_filter(guide, blurred, 6, 1e-3)

    def iou(m):
        a, b = m[0] > 0.5, truth > 0.5
        return float((a & b).sum() / (a | b).sum())

    assert iou(blurred) < 0.9  # 0.87: the arms' ends and the centre are rounded off
    assert iou(refined) > 0.98
    fast = guided_filter(guide, blurred, 6, 1e-3, subsample=2)  # fitted at 24 x 24
    assert iou(fast) > 0.95 and (fast - refined).abs().mean() < 0.05
    # a guide without the object's edge (flat colour) cannot move the outline
    flat = torch.full((3, 48, 48), 0.5) + 0.02 * torch.randn(3, 48, 48)
    assert iou(guided_filter(flat, blurred, 6, 1e-3)) < 0.9


def test_guided_filter_checks_its_inputs():
    with pytest.raises(ValueError, match=r"Tensor\[3, H, W\]"):
        guided_filter(torch.rand(1, 8, 8), torch.rand(2, 8, 8), 1, 1e-3)
    with pytest.raises(ValueError, match="guide's size"):
        guided_filter(torch.rand(3, 8, 8), torch.rand(2, 8, 9), 1, 1e-3)
    with pytest.raises(ValueError, match="radius >= 1"):
        guided_filter(torch.rand(3, 8, 8), torch.rand(2, 8, 8), 0, 1e-3)
    with pytest.raises(ValueError, match="subsample >= 1"):
        guided_filter(torch.rand(3, 8, 8), torch.rand(2, 8, 8), 1, 1e-3, subsample=0)


def test_refine_mask_logits_sizes_padding_and_cap():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    images = torch.rand(2, 3, 32, 32)
    out = refine_mask_logits(logits, images, image_sizes=[(32, 32), (20, 24)])
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1, :, 20:], up[1, :, 20:]) and torch.allclose(out[1, :, :, 24:],
                                                                           up[1, :, :, 24:])
    assert not torch.allclose(out[1, :, :20, :24], up[1, :, :20, :24])  # the image is filtered
    # chunks of queries give the same result as one pass
    assert torch.allclose(out, refine_mask_logits(logits, images, chunk_size=1,
                                                  image_sizes=[(32, 32), (20, 24)]), atol=1e-5)
    capped = refine_mask_logits(logits, images, max_side=16)
    assert capped.shape == (2, 3, 16, 16)
    fast = refine_mask_logits(logits, images, subsample=2, image_sizes=[(32, 32), (20, 24)])
    assert fast.shape == out.shape
    assert (fast.sigmoid() - out.sigmoid()).abs().mean() < 0.05
    with pytest.raises(ValueError, match="RADIUS > 0"):
        refine_mask_logits(logits, images, radius=0.0)


def test_mask_refiner_holds_checked_settings_from_the_config():
    cfg = get_cfg()
    assert MaskRefiner.from_config(cfg) is None  # off by default
    cfg.merge_from_list(["MODEL.TEST.MASK_REFINE.ENABLED", True,
                         "MODEL.TEST.MASK_REFINE.SUBSAMPLE", 2])
    refiner = MaskRefiner.from_config(cfg)
    assert refiner == MaskRefiner(radius=1.5, eps=1e-3, max_side=512, subsample=2)
    logits, images = torch.randn(1, 2, 8, 8), torch.rand(1, 3, 32, 32)
    assert torch.equal(refiner(logits, images), refine_mask_logits(logits, images, subsample=2))
    for bad in ({"radius": 0.0}, {"eps": -1.0}, {"max_side": -1}, {"subsample": 0}):
        with pytest.raises(ValueError, match="MODEL.TEST.MASK_REFINE needs"):
            MaskRefiner(**bad)
