"""Paired image / mask augmentation (torchvision.transforms.v2 with tv_tensors).

Training (``INPUT.TRAIN_AUGMENTATION``):

- ``"lsj"``: large-scale jitter: resize so the image fits ``IMAGE_SIZE * s`` with ``s`` uniform in
  ``[MIN_SCALE, MAX_SCALE]``, then random crop / pad to ``IMAGE_SIZE x IMAGE_SIZE``;
- ``"shortest_edge"``: resize the shorter side to a random size in
  ``[MIN_SCALE, MAX_SCALE] * IMAGE_SIZE``, then random crop / pad to ``IMAGE_SIZE``;

both followed by a horizontal flip (``INPUT.RANDOM_FLIP``). Padding fills the image with 128,
the semantic map with the ignore label and instance masks with 0. Masks always use nearest
interpolation, so image and masks stay aligned pixel for pixel.

Testing: only the image is resized (shorter side to ``INPUT.TEST_SIZE``, 0 = keep, and the
longer side capped at ``INPUT.MAX_SIDE``); ground truth stays at the original size.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "InstanceMasks",
    "PairedTransform",
    "TRAIN_AUGMENTATIONS",
    "build_train_transform",
    "build_test_transform",
    "EvalResize",
    "resize_for_test",
]

IMAGE_PAD_VALUE = 128


class InstanceMasks(tv_tensors.Mask):
    """N x H x W instance masks: transformed like masks, padded with 0 (not the ignore label)."""


def _crop_flip(size: int, ignore_label: int, flip: bool) -> list[v2.Transform]:
    fill = {tv_tensors.Image: IMAGE_PAD_VALUE, tv_tensors.Mask: ignore_label, InstanceMasks: 0}
    out: list[v2.Transform] = [v2.RandomCrop((size, size), pad_if_needed=True, fill=fill)]
    if flip:
        out.append(v2.RandomHorizontalFlip(p=0.5))
    return out


def _lsj(size: int, min_scale: float, max_scale: float) -> list[v2.Transform]:
    return [v2.ScaleJitter((size, size), scale_range=(min_scale, max_scale), antialias=True)]


def _shortest_edge(size: int, min_scale: float, max_scale: float) -> list[v2.Transform]:
    lo = max(1, int(round(size * min_scale)))
    hi = max(lo + 1, int(round(size * max_scale)) + 1)
    return [v2.RandomResize(lo, hi, antialias=True)]


# Name -> function(size, min_scale, max_scale) returning the resize transforms.
TRAIN_AUGMENTATIONS: dict[str, Callable[[int, float, float], list[v2.Transform]]] = {
    "lsj": _lsj,
    "shortest_edge": _shortest_edge,
}


class PairedTransform:
    """Apply one random transform to an image, its semantic map and its instance masks.

    ``__call__(image: uint8 Tensor[3,H,W], sem_seg: Tensor[H,W] | None,
    masks: bool Tensor[N,H,W] | None) -> (image Tensor[3,H',W'], sem_seg Tensor[H',W'] | None,
    masks bool Tensor[N,H',W'] | None)``.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, sem_seg: torch.Tensor | None = None,
                 masks: torch.Tensor | None = None):
        sample: dict[str, torch.Tensor] = {"image": tv_tensors.Image(image)}
        if sem_seg is not None:
            sample["sem_seg"] = tv_tensors.Mask(sem_seg)
        if masks is not None:
            sample["masks"] = InstanceMasks(masks.to(torch.uint8))
        out = self.transform(sample)
        img = out["image"].as_subclass(torch.Tensor)
        sem = out["sem_seg"].as_subclass(torch.Tensor) if sem_seg is not None else None
        ms = out["masks"].as_subclass(torch.Tensor).bool() if masks is not None else None
        return img, sem, ms

    def __repr__(self) -> str:
        return f"PairedTransform({self.transform})"


def build_train_transform(cfg) -> PairedTransform:
    """Training augmentation of ``cfg.INPUT`` (see the module docstring)."""
    name = cfg.INPUT.TRAIN_AUGMENTATION
    if name not in TRAIN_AUGMENTATIONS:
        raise ValueError(
            f"Unknown INPUT.TRAIN_AUGMENTATION {name!r}; valid: {', '.join(TRAIN_AUGMENTATIONS)}"
        )
    size, lo, hi = int(cfg.INPUT.IMAGE_SIZE), float(cfg.INPUT.MIN_SCALE), float(
        cfg.INPUT.MAX_SCALE)
    if not 0 < lo <= hi:
        raise ValueError(f"INPUT.MIN_SCALE/MAX_SCALE must satisfy 0 < min <= max, got {lo}, {hi}")
    ops = TRAIN_AUGMENTATIONS[name](size, lo, hi)
    ops += _crop_flip(size, 255, bool(cfg.INPUT.RANDOM_FLIP))
    return PairedTransform(v2.Compose(ops))


def resize_for_test(image: torch.Tensor, test_size: int, max_side: int) -> torch.Tensor:
    """Resize Tensor[3,H,W] so the shorter side is ``test_size`` (0 = keep) and the longer side
    at most ``max_side`` (0 = no cap). Returns the image unchanged when nothing applies."""
    h, w = image.shape[-2:]
    scale = test_size / min(h, w) if test_size > 0 else 1.0
    if max_side > 0 and max(h, w) * scale > max_side:
        scale = max_side / max(h, w)
    if scale == 1.0:
        return image
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return F.resize(image, [new_h, new_w], antialias=True)


class EvalResize:
    """Image-only test resize: ``__call__(image Tensor[3,H,W]) -> Tensor[3,H',W']``."""

    def __init__(self, test_size: int, max_side: int) -> None:
        self.test_size, self.max_side = int(test_size), int(max_side)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return resize_for_test(image, self.test_size, self.max_side)

    def __repr__(self) -> str:
        return f"EvalResize(test_size={self.test_size}, max_side={self.max_side})"


def build_test_transform(cfg) -> EvalResize:
    """Image-only test resize of ``cfg.INPUT`` (``TEST_SIZE``, ``MAX_SIDE``)."""
    return EvalResize(int(cfg.INPUT.TEST_SIZE), int(cfg.INPUT.MAX_SIDE))
