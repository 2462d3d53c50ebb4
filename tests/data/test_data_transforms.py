import numpy as np
import pytest
import torch

from mmmask.config import get_cfg
from mmmask.data.transforms import (
    build_test_transform,
    build_train_transform,
    resize_for_test,
)

PALETTE = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255],
                        [255, 0, 255]], dtype=torch.uint8)


def _synthetic(h=40, w=56, block=8, seed=0):
    """Label map of blocks and an image whose colour is PALETTE[label] (mask == colour)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, len(PALETTE), (h // block, w // block), generator=g)
    sem = small.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = PALETTE[sem].permute(2, 0, 1).contiguous()  # (3, H, W)
    classes = sem.unique()
    masks = torch.stack([sem == c for c in classes])
    return image, sem, masks, classes


def _interior(s, r=1):
    padded = torch.nn.functional.pad(s[None, None].float(), (r, r, r, r), value=-1)[0, 0]
    h, w = s.shape
    same = torch.ones_like(s, dtype=torch.bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy:dy + h, dx:dx + w] == s
    return same


def _cfg(aug="lsj", size=48):
    cfg = get_cfg()
    cfg.INPUT.IMAGE_SIZE = size
    cfg.INPUT.TRAIN_AUGMENTATION = aug
    return cfg


@pytest.mark.parametrize("aug", ["lsj", "shortest_edge"])
def test_image_and_masks_stay_aligned(aug):
    transform = build_train_transform(_cfg(aug))
    image, sem, masks, classes = _synthetic(h=64, w=80, block=16)
    for seed in range(12):
        torch.manual_seed(seed)
        img, s, ms = transform(image, sem, masks)
        assert img.shape == (3, 48, 48) and img.dtype == torch.uint8
        assert s.shape == (48, 48) and ms.shape == (len(classes), 48, 48)
        assert ms.dtype == torch.bool
        valid = s != 255
        # pixels inside a block (their 3x3 neighbourhood has one label) have exactly the
        # colour of their class; near block edges interpolation may blend colours
        interior = _interior(s) & valid
        assert interior.sum() > 0.1 * valid.sum()
        nearest = (img.permute(1, 2, 0)[:, :, None, :].int() - PALETTE.int()).abs().sum(-1)
        assert (nearest.argmin(-1) == s)[interior].float().mean() > 0.99
        # instance masks are the semantic regions, pixel for pixel; padding is 0 / 255
        for m, c in zip(ms, classes):
            assert torch.equal(m, s == c)
        assert not ms[:, ~valid].any()
        pad = ~valid
        if pad.any():
            assert (img[:, pad] == 128).all()


def test_flip_happens_and_is_consistent():
    cfg = _cfg(size=40)
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    transform = build_train_transform(cfg)
    image, sem, masks, _ = _synthetic(h=40, w=40)
    flipped = 0
    for seed in range(10):
        torch.manual_seed(seed)
        img, s, _ = transform(image, sem, masks)
        if torch.equal(s, sem):
            assert torch.equal(img, image)
        else:
            assert torch.equal(s, sem.flip(-1)) and torch.equal(img, image.flip(-1))
            flipped += 1
    assert 0 < flipped < 10


def test_no_flip_when_disabled():
    cfg = _cfg(size=40)
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    cfg.INPUT.RANDOM_FLIP = False
    transform = build_train_transform(cfg)
    image, sem, masks, _ = _synthetic(h=40, w=40)
    for seed in range(5):
        torch.manual_seed(seed)
        _, s, _ = transform(image, sem, masks)
        assert torch.equal(s, sem)


def test_lsj_scale_range():
    cfg = _cfg(size=64)
    cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = 0.5, 0.5
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    sem = torch.zeros(32, 32, dtype=torch.long)
    torch.manual_seed(0)
    img, s, ms = build_train_transform(cfg)(image, sem, None)
    assert ms is None and img.shape == (3, 64, 64)
    assert (s != 255).sum() == 32 * 32  # scaled to 32 px, padded to 64


def test_transform_without_masks_and_bad_config():
    image, sem, _, _ = _synthetic()
    img, s, ms = build_train_transform(_cfg())(image, None, None)
    assert s is None and ms is None and img.shape == (3, 48, 48)
    with pytest.raises(ValueError, match="lsj"):
        build_train_transform(_cfg(aug="nope"))
    cfg = _cfg()
    cfg.INPUT.MIN_SCALE = 2.0
    with pytest.raises(ValueError, match="MIN_SCALE"):
        build_train_transform(cfg)


def test_test_resize():
    image = torch.zeros(3, 30, 60, dtype=torch.uint8)
    assert resize_for_test(image, 0, 0) is image
    assert resize_for_test(image, 60, 0).shape == (3, 60, 120)
    assert resize_for_test(image, 60, 100).shape == (3, 50, 100)
    assert resize_for_test(image, 0, 40).shape == (3, 20, 40)
    cfg = get_cfg()
    cfg.INPUT.TEST_SIZE = 15
    assert build_test_transform(cfg)(image).shape == (3, 15, 30)
    assert np.isclose(float(resize_for_test(image + 7, 15, 0).float().mean()), 7)
