"""``GroundTruthEcho``: a model whose outputs are its inputs' ground truth.

It checks the evaluation pipeline end to end (loader -> model -> evaluator -> report): on any
dataset it must score mIoU 100, PQ 100 and AP 100.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mmmask.config import configurable
from mmmask.registry import META_ARCH_REGISTRY

from .evaluator import to_numpy

__all__ = ["GroundTruthEcho", "echo_outputs"]


def echo_outputs(inp: dict, num_classes: int = 0, ignore_label: int = 255) -> dict:
    """Model outputs built from one input's ground truth.

    Args:
        inp: a model input with ``sem_seg`` (long [H, W]) and/or ``instances``
            (``masks`` bool [N, H, W], ``classes`` [N], ``is_thing`` [N]).
        num_classes: channels C of the ``sem_seg`` scores; 0 = one more than the largest label.

    Returns:
        ``{"sem_seg": one-hot float [C, H, W]}`` (zeros at ignored pixels) when the input has
        ``sem_seg`` or ``instances``; ``"panoptic_seg"`` (segment ``i`` has id ``i + 1``, pixels
        ignored in ``sem_seg`` are void) and ``"instances"`` (thing segments, score 1) when it has
        ``instances``.
    """
    out: dict[str, Any] = {}
    sem = to_numpy(inp["sem_seg"]).astype(np.int64) if inp.get("sem_seg") is not None else None
    inst = inp.get("instances")
    if inst is not None:
        masks = torch.as_tensor(to_numpy(inst["masks"])).bool()  # (N, H, W)
        classes = torch.as_tensor(to_numpy(inst["classes"])).long().reshape(-1)
        if inst.get("is_thing") is not None:
            is_thing = torch.as_tensor(to_numpy(inst["is_thing"])).bool().reshape(-1)
        else:
            is_thing = torch.ones_like(classes, dtype=torch.bool)
        ids = torch.zeros(masks.shape[1:], dtype=torch.int64)
        for i in range(masks.shape[0]):
            ids[masks[i]] = i + 1
        if sem is None:  # labels from the segments
            sem = np.full(ids.shape, ignore_label, np.int64)
            for i in range(masks.shape[0]):
                sem[masks[i].numpy()] = int(classes[i])
        else:
            ids[torch.from_numpy(sem == ignore_label)] = 0
        segments = [{"id": i + 1, "category_id": int(classes[i]), "isthing": bool(is_thing[i]),
                     "score": 1.0} for i in range(masks.shape[0])]
        out["panoptic_seg"] = (ids, segments)
        out["instances"] = {"masks": masks[is_thing].clone(),
                            "scores": torch.ones(int(is_thing.sum())),
                            "classes": classes[is_thing].clone()}
    if sem is not None:
        valid = sem != ignore_label
        c = num_classes or (int(sem[valid].max()) + 1 if valid.any() else 1)
        labels = torch.from_numpy(np.where(valid, sem, 0))
        scores = torch.nn.functional.one_hot(labels, c).permute(2, 0, 1).float()  # (C, H, W)
        scores[:, torch.from_numpy(~valid)] = 0.0
        out["sem_seg"] = scores
    if not out:
        raise KeyError("GroundTruthEcho needs 'sem_seg' or 'instances' in every input.")
    return out


@META_ARCH_REGISTRY.register()
class GroundTruthEcho(nn.Module):
    """Returns each input's ground truth as its prediction (eval mode); zero loss in train mode."""

    @configurable
    def __init__(self, *, num_classes: int = 0, ignore_label: int = 255):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.dummy = nn.Parameter(torch.zeros(1))  # so that an optimizer can be built

    @classmethod
    def from_config(cls, cfg: Any) -> dict:
        num_classes = 0
        if len(cfg.DATASETS.TEST):
            try:
                from mmmask.data.catalog import MetadataCatalog

                num_classes = len(MetadataCatalog.get(cfg.DATASETS.TEST[0]).class_names)
            except (ImportError, AttributeError):
                num_classes = 0
        return {"num_classes": num_classes}

    def set_vocabulary(self, vocab: Any) -> None:
        """Use ``len(vocab)`` score channels."""
        self.num_classes = len(vocab)

    def forward(self, batch: list[dict]) -> Any:
        if self.training:
            return {"loss_echo": self.dummy.sum() * 0.0}
        return [echo_outputs(inp, self.num_classes, self.ignore_label) for inp in batch]
