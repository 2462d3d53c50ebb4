"""SAM masks named by the classifier: the per-image mask cache used for multi-task evaluation."""

import torch

from mmmask.data.shapes import render_sample
from mmmask.predictor import SegmentationPredictor


def _item(i: int) -> dict:
    image = render_sample(0, "val", i, 96).image
    return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "height": 96,
            "width": 96, "image_id": i}


def test_cached_sam_masks_run_sam_once_per_image_and_change_nothing(monkeypatch):
    pred = SegmentationPredictor.from_files(None)  # shipped segmenter + tiny SAM
    calls = []
    real = pred._sam_inputs

    def counting(image, size):
        calls.append(image.shape)
        return real(image, size)

    monkeypatch.setattr(pred, "_sam_inputs", counting)
    plain, cached = pred.as_model("sam"), pred.as_model("sam", cache_masks=True)
    a, b = _item(0), _item(1)
    ref = plain([a])[0]["sem_seg"]
    assert len(calls) == 1
    first = cached([a, b])
    second = cached([b, a])  # same pixels -> no SAM call, whatever the order
    assert len(calls) == 3 and len(cached.cache) == 2
    assert torch.equal(first[0]["sem_seg"], ref) and torch.equal(second[1]["sem_seg"], ref)
    assert torch.equal(first[1]["sem_seg"], second[0]["sem_seg"])
    plain([a])
    assert len(calls) == 4  # without the cache SAM reruns
