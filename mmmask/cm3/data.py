"""CM3 data: the ``CM3DocumentMapper`` and the ``shapes_ov_documents`` datasets.

Importing this module (``import mmmask.cm3`` does) registers:

- ``CM3DocumentMapper`` in DATA_MAPPER_REGISTRY;
- ``shapes_ov_documents`` (Shapes-OV captions split, 200k procedural image-caption scenes) and
  ``shapes_ov_documents_val`` (the 200 val scenes) in the dataset catalog, through the
  DATASET_REGISTRY entry :func:`cm3_documents`.
"""

from __future__ import annotations

import tarfile
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..config import configurable
from ..registry import DATA_MAPPER_REGISTRY, DATASET_REGISTRY

__all__ = ["CM3DocumentMapper", "cm3_documents", "resize_square", "DOCUMENTS_LENGTH"]

# Number of training documents (procedural: no memory cost).
DOCUMENTS_LENGTH = 200_000


def resize_square(image: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 -> uint8 Tensor[3, size, size]: shorter side to ``size``, centre crop."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
    h, w = t.shape[-2:]
    if (h, w) == (size, size):
        return t.contiguous()
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(t[None].float(), size=(nh, nw), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, top: top + size, left: left + size]
    return x.round().clamp(0, 255).to(torch.uint8).contiguous()


def _read_tar_member(shard: str, member: str) -> bytes:
    with tarfile.open(shard, "r") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise KeyError(f"{member!r} is not a file in {shard}")
        return f.read()


@DATA_MAPPER_REGISTRY.register()
class CM3DocumentMapper:
    """Image-caption record -> ``{"image": uint8 Tensor[3, S, S], "caption": str, "cm3_seed":
    int, "image_id", "height", "width"}`` with ``S = CM3.VQ.IMAGE_SIZE``.

    Records: Shapes-OV ``{"shapes": {"seed", "split", "index", "size", "kind"?}}`` (a scene of
    ``render_sample``, or an object crop for ``kind == "crop"``); ``{"file_name", "caption"}``;
    webdataset ``{"webdataset": {"shard", "image"}, "caption"}``. ``cm3_seed`` seeds the masking
    of the document: random in training, a hash of ``image_id`` at test time.
    """

    @configurable
    def __init__(self, *, is_train: bool, image_size: int, random_flip: bool = False,
                 max_pixels: int | None = None) -> None:
        self.is_train = is_train
        self.image_size = int(image_size)
        self.random_flip = random_flip and is_train
        self.max_pixels = max_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {"is_train": is_train, "image_size": cfg.CM3.VQ.IMAGE_SIZE,
                "random_flip": bool(cfg.INPUT.RANDOM_FLIP),
                "max_pixels": int(cfg.INPUT.MAX_PIXELS)}

    def _load(self, record: dict) -> tuple[np.ndarray, str]:
        from ..data.image_io import read_image
        from ..data.shapes import render_object_crop, render_sample

        if "shapes" in record:
            spec = record["shapes"]
            size = int(spec.get("size", self.image_size))
            if spec.get("kind", "scene") == "crop":
                img, caption, _ = render_object_crop(int(spec["seed"]), int(spec["index"]), size)
                return img, caption
            s = render_sample(int(spec["seed"]), spec.get("split", "captions"),
                              int(spec["index"]), size)
            return s.image, s.caption
        if "caption" not in record:
            raise KeyError(f"CM3 record {record.get('image_id')!r} has no 'caption'; keys: "
                           f"{sorted(record)}")
        if "webdataset" in record:
            wd = record["webdataset"]
            data = _read_tar_member(wd["shard"], wd["image"])
            return read_image(data, self.max_pixels, name=f"{wd['shard']}:{wd['image']}"), \
                record["caption"]
        if "file_name" in record:
            return read_image(record["file_name"], self.max_pixels), record["caption"]
        raise KeyError(f"CM3 record {record.get('image_id')!r} needs 'shapes', 'file_name' or "
                       f"'webdataset'; keys: {sorted(record)}")

    def __call__(self, record: dict) -> dict:
        img, caption = self._load(record)
        image = resize_square(img, self.image_size)
        if self.random_flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)  # captions name no left/right: flipping keeps them true
        if self.is_train:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        else:
            seed = zlib.crc32(str(record.get("image_id")).encode())
        s = self.image_size
        return {"image": image.contiguous(), "caption": caption, "cm3_seed": seed,
                "image_id": record.get("image_id"), "height": s, "width": s}


@DATASET_REGISTRY.register()
def cm3_documents(cfg=None) -> list[str]:
    """Register ``shapes_ov_documents`` (train) and ``shapes_ov_documents_val`` (idempotent)."""
    from ..data.builtin import ShapesRecords
    from ..data.catalog import register_dataset

    size = int(cfg.CM3.VQ.IMAGE_SIZE) if cfg is not None else 64
    seed = int(cfg.DATASETS.SHAPES.SEED) if cfg is not None else 0
    val = int(cfg.DATASETS.SHAPES.VAL_SIZE) if cfg is not None else 200
    register_dataset("shapes_ov_documents",
                     lambda: ShapesRecords("captions", DOCUMENTS_LENGTH, size, seed),
                     overwrite=True, split="captions", image_size=size, seed=seed,
                     evaluator_type="cm3")
    register_dataset("shapes_ov_documents_val", lambda: ShapesRecords("val", val, size, seed),
                     overwrite=True, split="val", image_size=size, seed=seed,
                     evaluator_type="cm3")
    return ["shapes_ov_documents", "shapes_ov_documents_val"]


cm3_documents()
