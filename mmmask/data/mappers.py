"""Dataset mappers: a catalog record -> the model's input dict for one image.

Output of :class:`SegmentationMapper`::

    {"image": uint8 Tensor[3,H,W] (RGB), "height": int, "width": int (original size),
     "image_id", "sem_seg": long Tensor[H,W] (255 = ignore; when annotated),
     "instances": {"masks": bool Tensor[N,H,W], "classes": long Tensor[N],
                   "is_thing": bool Tensor[N]} (panoptic segments; when annotated)}

In training the image and annotations are augmented together (``build_train_transform``); in
evaluation only the image is resized (``INPUT.TEST_SIZE``) and ground truth keeps the original
size. :class:`CaptionMapper` renders Shapes-OV caption records at the CLIP image size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..config import configurable
from ..registry import DATA_MAPPER_REGISTRY
from .annotations import load_record
from .catalog import MetadataCatalog
from .image_io import DEFAULT_MAX_PIXELS, read_image
from .transforms import PairedTransform, build_test_transform, build_train_transform

__all__ = ["SegmentationMapper", "CaptionMapper"]


@DATA_MAPPER_REGISTRY.register()
class SegmentationMapper:
    """Record (Shapes-OV, semantic PNG, COCO panoptic, COCO instances) -> model input dict."""

    @configurable
    def __init__(self, *, is_train: bool, train_transform: PairedTransform | None = None,
                 test_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 is_thing: Sequence[bool] | None = None, ignore_label: int = 255,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        """
        Args:
            is_train: augment image and annotations together (else resize the image only).
            train_transform: paired augmentation used when ``is_train``.
            test_transform: image-only resize used when not ``is_train`` (None = keep size).
            is_thing: per-class thing flags, for the segments of semantic-only records.
            ignore_label: ignore value of the dataset's label PNGs (mapped to 255).
            max_pixels: images larger than this are refused before decoding.
        """
        if is_train and train_transform is None:
            raise ValueError("SegmentationMapper(is_train=True) needs a train_transform")
        self.is_train = is_train
        self.train_transform = train_transform
        self.test_transform = test_transform
        self.is_thing = list(is_thing) if is_thing is not None else None
        self.ignore_label = ignore_label
        self.max_pixels = max_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str | None = None) -> dict:
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        name = dataset_name or (names[0] if len(names) else None)
        meta = MetadataCatalog.get(name).as_dict() if name and name in MetadataCatalog else {}
        return {
            "is_train": is_train,
            "train_transform": build_train_transform(cfg) if is_train else None,
            "test_transform": None if is_train else build_test_transform(cfg),
            "is_thing": meta.get("is_thing"),
            "ignore_label": int(meta.get("ignore_label", 255)),
            "max_pixels": int(cfg.INPUT.MAX_PIXELS),
        }

    def __call__(self, record: dict) -> dict:
        ann = load_record(record, is_thing=self.is_thing, ignore_label=self.ignore_label,
                          max_pixels=self.max_pixels)
        height, width = ann.image.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(ann.image)).permute(2, 0, 1)  # (3, H, W)
        sem = torch.from_numpy(ann.sem_seg) if ann.sem_seg is not None else None
        masks = torch.from_numpy(ann.masks) if ann.masks is not None else None
        classes = torch.from_numpy(ann.classes) if ann.classes is not None else None
        is_thing = torch.from_numpy(ann.is_thing) if ann.is_thing is not None else None
        if self.is_train:
            image, sem, masks = self.train_transform(image.contiguous(), sem, masks)
            if masks is not None:  # drop segments cropped away
                keep = masks.flatten(1).any(dim=1)
                masks, classes, is_thing = masks[keep], classes[keep], is_thing[keep]
        elif self.test_transform is not None:
            image = self.test_transform(image)
        out = {"image": image.contiguous(), "height": int(height), "width": int(width),
               "image_id": record.get("image_id")}
        if sem is not None:
            out["sem_seg"] = sem.long()
        if masks is not None:
            out["instances"] = {"masks": masks.bool(), "classes": classes.long(),
                                "is_thing": is_thing.bool()}
        return out


def _square(image: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 -> uint8 Tensor[3,size,size]: shorter side resized, then center crop."""
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
    if t.shape[-2:] != (size, size):
        t = F.center_crop(F.resize(t, size, antialias=True), [size, size])
    return t.contiguous()


@DATA_MAPPER_REGISTRY.register()
class CaptionMapper:
    """Caption record -> ``{"image": uint8 Tensor[3,S,S], "caption", "image_id", "height",
    "width"}`` with ``S = MODEL.CLIP.IMAGE_SIZE``.

    Shapes-OV records ``{"shapes": {"seed", "index", "kind": "crop"|"scene", ...}}`` are
    rendered at ``S`` (one object crop, or a scene of the captions split); records with
    ``file_name`` and ``caption`` are read and resized/cropped to ``S``.
    """

    @configurable
    def __init__(self, *, is_train: bool, image_size: int, random_flip: bool = False,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.is_train = is_train
        self.image_size = int(image_size)
        self.random_flip = random_flip and is_train
        self.max_pixels = max_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {"is_train": is_train, "image_size": cfg.MODEL.CLIP.IMAGE_SIZE,
                "random_flip": bool(cfg.INPUT.RANDOM_FLIP),
                "max_pixels": int(cfg.INPUT.MAX_PIXELS)}

    def load(self, record: dict) -> tuple[np.ndarray, str]:
        """``(HxWx3 uint8 image, caption)`` of a caption record (rendered or read)."""
        from .shapes import render_object_crop, render_object_region, render_sample

        s = self.image_size
        if "shapes" in record:
            spec = record["shapes"]
            kind = spec.get("kind", "scene")
            if kind == "crop":
                img, caption, _ = render_object_crop(int(spec["seed"]), int(spec["index"]), s)
                return img, caption
            if kind == "region":
                img, caption, _ = render_object_region(int(spec["seed"]), int(spec["index"]), s)
                return img, caption
            if kind == "scene":
                sample = render_sample(int(spec["seed"]), spec.get("split", "captions"),
                                       int(spec["index"]), s)
                return sample.image, sample.caption
            raise ValueError(f"Unknown caption record kind {kind!r}; valid: crop, scene, region")
        if "file_name" in record and "caption" in record:
            return read_image(record["file_name"], self.max_pixels), record["caption"]
        raise KeyError(
            f"Caption record {record.get('image_id')!r} needs 'shapes' or 'file_name' + "
            f"'caption'; keys: {sorted(record)}"
        )

    def __call__(self, record: dict) -> dict:
        img, caption = self.load(record)
        s = self.image_size
        image = _square(img, s)
        if self.random_flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)  # captions name no left/right: flipping keeps them true
        return {"image": image.contiguous(), "caption": caption, "image_id": record.get("image_id"),
                "height": s, "width": s}
