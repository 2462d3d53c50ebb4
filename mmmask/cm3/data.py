"""CM3 data: the ``CM3DocumentMapper`` and the ``shapes_ov_documents`` datasets.

Importing this module (``import mmmask.cm3`` does) registers:

- ``CM3DocumentMapper`` in DATA_MAPPER_REGISTRY;
- ``shapes_ov_documents`` (Shapes-OV captions split, 200k procedural image-caption documents:
  scenes, and object crops or regions as ``CM3.DOCUMENT_KINDS`` asks) and
  ``shapes_ov_documents_val`` (the 200 val scenes) in the dataset catalog, through the
  DATASET_REGISTRY entry :func:`cm3_documents`.
"""

from __future__ import annotations

import tarfile
import zlib

import numpy as np
import torch

from ..data.mappers import CaptionMapper
from ..registry import DATA_MAPPER_REGISTRY, DATASET_REGISTRY

__all__ = ["CM3DocumentMapper", "cm3_documents", "DOCUMENTS_LENGTH"]

# Number of training documents (procedural: no memory cost).
DOCUMENTS_LENGTH = 200_000


def _read_tar_member(shard: str, member: str) -> bytes:
    with tarfile.open(shard, "r") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise KeyError(f"{member!r} is not a file in {shard}")
        return f.read()


@DATA_MAPPER_REGISTRY.register()
class CM3DocumentMapper(CaptionMapper):
    """Image-caption record -> ``{"image": uint8 Tensor[3, S, S], "caption": str, "cm3_seed":
    int, "image_id", "height", "width"}`` with ``S = CM3.VQ.IMAGE_SIZE``.

    Records: Shapes-OV ``{"shapes": {"seed", "split", "index", "size", "kind"?}}`` (a scene of
    ``render_sample``, or an object crop for ``kind == "crop"``); ``{"file_name", "caption"}``;
    webdataset ``{"webdataset": {"shard", "image"}, "caption"}``. ``cm3_seed`` seeds the masking
    of the document: random in training, a hash of ``image_id`` at test time.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {"is_train": is_train, "image_size": cfg.CM3.VQ.IMAGE_SIZE,
                "random_flip": bool(cfg.INPUT.RANDOM_FLIP),
                "max_pixels": int(cfg.INPUT.MAX_PIXELS)}

    def load(self, record: dict) -> tuple[np.ndarray, str]:
        if "webdataset" in record:
            from ..data.image_io import read_image

            if "caption" not in record:
                raise KeyError(f"CM3 record {record.get('image_id')!r} has no 'caption'; keys: "
                               f"{sorted(record)}")
            wd = record["webdataset"]
            data = _read_tar_member(wd["shard"], wd["image"])
            name = f"{wd['shard']}:{wd['image']}"
            return read_image(data, self.max_pixels, name=name), record["caption"]
        return super().load(record)

    def __call__(self, record: dict) -> dict:
        out = super().__call__(record)
        if self.is_train:
            out["cm3_seed"] = int(torch.randint(0, 2**31 - 1, ()))
        else:
            out["cm3_seed"] = zlib.crc32(str(record.get("image_id")).encode())
        return out


@DATASET_REGISTRY.register()
def cm3_documents(cfg=None) -> list[str]:
    """Register ``shapes_ov_documents`` (train) and ``shapes_ov_documents_val`` (idempotent)."""
    from ..data.builtin import ShapesRecords
    from ..data.catalog import register_dataset

    size = int(cfg.CM3.VQ.IMAGE_SIZE) if cfg is not None else 64
    seed = int(cfg.DATASETS.SHAPES.SEED) if cfg is not None else 0
    val = int(cfg.DATASETS.SHAPES.VAL_SIZE) if cfg is not None else 200
    kinds = tuple(cfg.CM3.DOCUMENT_KINDS) if cfg is not None else ("scene",)
    try:
        ShapesRecords("captions", 0, size, seed, captions=True, kinds=kinds)  # checks the kinds
    except ValueError as e:
        raise ValueError(f"CM3.DOCUMENT_KINDS: {e}") from None
    register_dataset("shapes_ov_documents",
                     lambda: ShapesRecords("captions", DOCUMENTS_LENGTH, size, seed,
                                           captions=True, kinds=kinds),
                     overwrite=True, split="captions", image_size=size, seed=seed,
                     evaluator_type="cm3")
    register_dataset("shapes_ov_documents_val", lambda: ShapesRecords("val", val, size, seed),
                     overwrite=True, split="val", image_size=size, seed=seed,
                     evaluator_type="cm3")
    return ["shapes_ov_documents", "shapes_ov_documents_val"]


cm3_documents()
