"""Built-in datasets: Shapes-OV segmentation splits and image-caption pairs.

Registered names (at ``import mmmask.data``, with default sizes; ``register_builtin(cfg)``
re-registers them with the sizes of ``cfg.DATASETS.SHAPES``):

- ``shapes_ov_train`` / ``shapes_ov_val`` / ``shapes_ov_test``: procedural records
  ``{"image_id", "height", "width", "shapes": {"seed", "split", "index", "size"}}``; the train
  split labels only seen classes.
- ``shapes_ov_captions``: ``{"image_id", "height", "width", "shapes": {..., "kind"}}`` with
  ``kind`` cycling over ``DATASETS.SHAPES.CAPTION_KINDS`` (``"crop"``: one object, ``"scene"``,
  ``"region"``: one object cut from a scene); covers every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..registry import DATASET_REGISTRY
from .catalog import register_dataset
from .shapes import shapes_metadata

__all__ = ["ShapesRecords", "register_builtin", "SHAPES_DEFAULTS", "CAPTIONS_LENGTH",
           "CAPTION_KINDS"]

# Default split sizes, image side and seed (the DATASETS.SHAPES defaults).
SHAPES_DEFAULTS = {"train": 20000, "val": 200, "test": 500, "size": 128, "seed": 0}
# Number of caption records (procedural: no memory cost).
CAPTIONS_LENGTH = 200_000
CAPTION_KINDS = ("crop", "scene", "region")


class ShapesRecords(Sequence):
    """A list-like sequence of Shapes-OV records, built on access (no memory per record)."""

    def __init__(self, split: str, length: int, size: int, seed: int,
                 captions: bool = False, kinds: Sequence[str] = ("crop", "scene")) -> None:
        if length < 0:
            raise ValueError(f"Shapes-OV split length must be >= 0, got {length}")
        self.split, self.length, self.size, self.seed = split, int(length), int(size), int(seed)
        self.captions = captions
        self.kinds = tuple(kinds)
        unknown = sorted(set(self.kinds) - set(CAPTION_KINDS))
        if captions and (not self.kinds or unknown):
            raise ValueError(f"Caption kinds must be a non-empty subset of {CAPTION_KINDS}; "
                             f"got {list(self.kinds)}")

    def __len__(self) -> int:
        return self.length

    def _record(self, i: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"seed": self.seed, "split": self.split, "index": i,
                                "size": self.size}
        if self.captions:
            spec["kind"] = self.kinds[i % len(self.kinds)]
        return {"image_id": i, "height": self.size, "width": self.size, "shapes": spec}

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._record(j) for j in range(*i.indices(self.length))]
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"Shapes-OV {self.split} index {i} out of range 0..{self.length - 1}")
        return self._record(i)

    def __repr__(self) -> str:
        return (f"ShapesRecords(split={self.split!r}, length={self.length}, size={self.size}, "
                f"seed={self.seed})")


def _sizes(cfg) -> dict[str, int]:
    if cfg is None:
        return dict(SHAPES_DEFAULTS)
    c = cfg.DATASETS.SHAPES
    return {"train": int(c.TRAIN_SIZE), "val": int(c.VAL_SIZE), "test": int(c.TEST_SIZE),
            "size": int(c.IMAGE_SIZE), "seed": int(c.SEED), "kinds": tuple(c.CAPTION_KINDS)}


def register_builtin(cfg=None) -> list[str]:
    """(Re-)register the Shapes-OV names; sizes from ``cfg.DATASETS.SHAPES`` when given.

    Idempotent: calling it again replaces the earlier registration. Returns the names.
    """
    s = _sizes(cfg)
    meta = shapes_metadata()
    names = []
    for split in ("train", "val", "test"):
        name = f"shapes_ov_{split}"
        register_dataset(
            name, lambda sp=split, n=s[split]: ShapesRecords(sp, n, s["size"], s["seed"]),
            overwrite=True, split=split, image_size=s["size"], seed=s["seed"], **meta,
        )
        names.append(name)
    register_dataset(
        "shapes_ov_captions",
        lambda: ShapesRecords("captions", CAPTIONS_LENGTH, s["size"], s["seed"], captions=True,
                              kinds=s.get("kinds", ("crop", "scene"))),
        overwrite=True, split="captions", image_size=s["size"], seed=s["seed"],
        **meta,
    )
    names.append("shapes_ov_captions")
    if cfg is not None and cfg.DATASETS.ROOTS:
        from .readers import register_dataset_root

        for root in cfg.DATASETS.ROOTS:  # e.g. prepared COCO / ADE20K folders
            names += register_dataset_root(root)
    return names


@DATASET_REGISTRY.register()
def shapes_ov(cfg=None) -> list[str]:
    """DATASET_REGISTRY entry of Shapes-OV: :func:`register_builtin`."""
    return register_builtin(cfg)
