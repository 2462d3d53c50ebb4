"""Oracle naming: the model's own masks named by the ground truth.

Evaluating a model this way bounds what better naming alone could reach with its masks: each mask
takes the class that most of its labelled pixels carry, so the remaining error is the masks'
(outlines, merged or missed objects). ``tools/eval.py --oracle-names`` runs it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["majority_labels", "OracleNamedSegmentor"]


def majority_labels(masks: torch.Tensor, sem_seg: torch.Tensor, num_classes: int,
                    ignore_label: int = 255) -> torch.Tensor:
    """The most frequent ground-truth class under each mask.

    Args:
        masks: bool Tensor[Q,H,W]; sem_seg: long Tensor[H,W] with ``ignore_label`` for unlabelled
            pixels (and classes in ``[0, num_classes)``).

    Returns:
        long Tensor[Q]: the class, or -1 for a mask without a labelled pixel (ties go to the lower
        class index).
    """
    if masks.shape[-2:] != sem_seg.shape:
        raise ValueError(f"masks {tuple(masks.shape[-2:])} and labels {tuple(sem_seg.shape)} "
                         "must have the same size")
    labels = sem_seg.flatten()
    labelled = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    pixels = masks.flatten(1)[:, labelled].float()  # (Q, labelled pixels)
    counts = pixels.new_zeros(masks.shape[0], num_classes).index_add_(1, labels[labelled], pixels)
    best = counts.argmax(dim=1)
    return torch.where(counts.amax(dim=1) > 0, best, torch.full_like(best, -1))


class OracleNamedSegmentor(nn.Module):
    """Wraps an open-vocabulary segmenter: its masks and objectness, named by the ground truth.

    Every mask whose binarised area (probability > 0.5, at the labels' size) holds labelled
    pixels gets a one-hot class distribution for their majority class; the others keep the
    model's own (one distribution for every task, with the ensemble as ``MODEL.ENSEMBLE.ENABLED``
    sets it). Post-processing is the model's, for its ``tasks``. Inputs must carry ``sem_seg``
    labels.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def set_vocabulary(self, vocab, is_thing=None) -> None:
        self.model.set_vocabulary(vocab, is_thing)

    @torch.no_grad()
    def forward(self, batch: list[dict]) -> list[dict]:
        model = self.model
        if any("sem_seg" not in item for item in batch):
            raise ValueError("Oracle naming needs ground-truth semantic labels ('sem_seg') in "
                             "every input; this dataset's inputs have none.")
        images, sizes = model._images(batch)
        padded = tuple(images.shape[-2:])
        probs, objectness, mask_logits = model.predict_masks(images, image_sizes=sizes)
        outputs = []
        for i, item in enumerate(batch):
            sem_seg = item["sem_seg"].to(mask_logits.device)
            masks = model.output_masks(mask_logits[i], sizes[i], padded, tuple(sem_seg.shape))
            labels = majority_labels(masks > 0, sem_seg, probs.shape[-1])
            named = probs[i].clone()
            hit = labels >= 0
            named[hit] = 0.0
            named[hit, labels[hit]] = 1.0
            outputs.append(model.postprocess(named, objectness[i], mask_logits[i], sizes[i],
                                             padded, tuple(sem_seg.shape), masks=masks))
        return outputs
