"""evaluate_automatic: masks per image, recall and precision of automatic masks at IoU 0.5."""

import numpy as np
import pytest
import torch

from mmmask.modeling.mask_generators.sam_train import evaluate_automatic


def test_counts_recall_and_precision():
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[0, :4] = True  # top half
    gt[1, 4:, :2] = True  # a small block
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    top = np.zeros((8, 8), bool)
    top[:3] = True  # IoU 0.75 with the top half
    wrong = np.zeros((8, 8), bool)
    wrong[:, 6:] = True  # matches nothing

    def generate(img):
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
        return [{"segmentation": top}, {"segmentation": wrong}]

    out = evaluate_automatic(generate, [(image, gt), (image, gt[:0])])
    assert out["masks_per_image"] == 2.0
    assert out["recall"] == 0.5  # the top half found, the block missed
    assert out["precision"] == 0.25  # 1 of the 4 masks matches a segment
    with pytest.raises(ValueError, match="No image"):
        evaluate_automatic(generate, [])
