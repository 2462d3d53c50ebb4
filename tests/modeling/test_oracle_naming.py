"""Oracle naming: predicted masks named by their majority ground-truth class."""

import pytest
import torch
import torch.nn.functional as F

from mmmask.data.loader import build_test_loader
from mmmask.evaluation.oracle import OracleNamedSegmentor, majority_labels
from mmmask.modeling import build_model
from test_open_vocab import one_thread, tiny_cfg  # noqa: F401 (one thread per test)


def test_majority_labels_by_hand():
    sem = torch.tensor([[1, 1, 2, 255],
                        [255, 255, 0, 2],
                        [0, 0, 2, 2],
                        [3, 3, 3, 3]])
    masks = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks[0, :2] = True         # 1, 1, 0, 2 and three ignored pixels: class 1, not the
    masks[0, 0, 2] = False      # ignore label that covers most of the mask
    masks[2, 1, :2] = True      # ignored pixels only
    masks[3, 2] = True          # 0, 0, 2, 2: a tie goes to the lower class, 0
    masks[4, 3] = True          # all of class 3
    labels = majority_labels(masks, sem, num_classes=4)
    assert labels.tolist() == [1, -1, -1, 0, 3]  # mask 1 is empty


def test_majority_labels_ignores_out_of_range_and_checks_size():
    sem = torch.tensor([[7, 7], [0, 255]])
    masks = torch.ones(1, 2, 2, dtype=torch.bool)
    assert majority_labels(masks, sem, num_classes=2).tolist() == [0]
    with pytest.raises(ValueError, match="same size"):
        majority_labels(torch.ones(1, 3, 2, dtype=torch.bool), sem, num_classes=2)


@pytest.fixture(scope="module")
def model_and_batch():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    return model, next(iter(build_test_loader(cfg, "shapes_ov_val")))


def test_ground_truth_masks_named_by_the_oracle_give_the_labels(model_and_batch, monkeypatch):
    model, batch = model_and_batch
    sem = batch[0]["sem_seg"]
    images, sizes = model._images(batch)
    classes = [int(c) for c in sem.unique() if c != 255]
    hpad, wpad = images.shape[-2:]
    (h, w), = sizes  # the image as the model sees it (the labels are at the original size)
    up = F.interpolate(sem[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
    logits = torch.full((1, len(classes) + 1, hpad, wpad), -10.0)
    for q, c in enumerate(classes):  # one perfect mask per class, over the padded frame
        logits[0, q, :h, :w] = 20.0 * (up == c) - 10.0
    logits[0, -1, :h, :w] = 20.0 * (up == 255) - 10.0
    num_classes = len(model.vocabulary)
    rng = torch.Generator().manual_seed(0)
    probs = torch.rand(1, len(classes) + 1, num_classes, generator=rng).softmax(-1)

    def fake_predict_masks(images, external_masks=None, external_scores=None, image_sizes=None,
                           ensemble=None):
        return probs, torch.ones(1, len(classes) + 1), logits

    monkeypatch.setattr(model, "predict_masks", fake_predict_masks)
    monkeypatch.setattr(model, "tasks", ("semantic", "panoptic"))
    out = OracleNamedSegmentor(model)(batch)[0]
    labelled = sem != 255
    assert torch.equal(out["sem_seg"].argmax(0)[labelled], sem[labelled])
    ids, segments = out["panoptic_seg"]
    assert {s["category_id"] for s in segments} == set(classes)
    # The model's own names differ: the oracle is what made them right.
    own = model.postprocess(probs[0], torch.ones(len(classes) + 1), logits[0], sizes[0],
                            (hpad, wpad), tuple(sem.shape), tasks=("semantic",))
    assert not torch.equal(own["sem_seg"].argmax(0)[labelled], sem[labelled])


def test_oracle_needs_labels(model_and_batch):
    model, batch = model_and_batch
    item = {k: v for k, v in batch[0].items() if k != "sem_seg"}
    with pytest.raises(ValueError, match="sem_seg"):
        OracleNamedSegmentor(model)([item])
