"""Pure post-processing functions on tiny tensors."""

import torch

from mmmask.modeling.postprocess import (combine_class_probs, instance_inference, max_over_synonyms,
                                         panoptic_inference, semantic_inference)

BIG = 20.0


def _masks():
    m = torch.full((3, 4, 4), -BIG)
    m[0, :2] = BIG  # top half
    m[1, 2:] = BIG  # bottom half
    m[2, :, :1] = BIG  # left column (overlaps both)
    return m


def test_max_over_synonyms():
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.5]])  # synonyms of classes [0, 0, 1], then void
    out = max_over_synonyms(logits, torch.tensor([0, 0, 1]), 2)
    assert torch.equal(out, torch.tensor([[5.0, 2.0, 0.5]]))


def test_combine_without_and_with_ensemble():
    cls = torch.tensor([[4.0, 0.0, -9.0]])
    gen = torch.tensor([[0.0, 4.0, 0.0]])
    p, obj = combine_class_probs(cls, gen)
    assert p.argmax() == 0 and torch.allclose(p.sum(-1), torch.ones(1))
    assert torch.allclose(obj, 1 - gen.softmax(-1)[..., -1])
    # alpha = 0 on a seen class: only the generator's in-vocabulary distribution counts
    p2, _ = combine_class_probs(cls, gen, seen=torch.tensor([True, True]), ensemble=True, alpha=0.0)
    assert p2.argmax() == 1
    # beta = 1 on unseen classes: only the classifier counts
    p3, _ = combine_class_probs(cls, gen, seen=torch.tensor([False, False]), ensemble=True, beta=1.0)
    assert torch.allclose(p3, cls[..., :-1].softmax(-1), atol=1e-5)


def test_semantic_inference_assigns_by_mask_and_class():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    obj = torch.tensor([1.0, 1.0, 0.0])
    sem = semantic_inference(probs, obj, _masks())
    labels = sem.argmax(0)
    assert (labels[:2] == 0).all() and (labels[2:] == 1).all()


def test_panoptic_merges_stuff_and_drops_low_scores():
    probs = torch.tensor([[0.9, 0.1], [0.95, 0.05], [0.2, 0.8]])
    obj = torch.tensor([1.0, 1.0, 0.3])  # third query: score 0.24 < threshold
    masks = _masks()
    ids, segs = panoptic_inference(probs, obj, masks, is_thing=[False, True], object_mask_threshold=0.5)
    assert len(segs) == 1  # both stuff masks of class 0 merged into one segment
    assert segs[0]["category_id"] == 0 and not segs[0]["isthing"]
    assert segs[0]["area"] == 16 and (ids == segs[0]["id"]).all()


def test_panoptic_things_stay_separate_and_overlap_rule():
    probs = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    obj = torch.tensor([1.0, 0.9, 0.8])
    ids, segs = panoptic_inference(probs, obj, _masks(), is_thing=[False, True],
                                   overlap_threshold=0.8)
    assert [s["category_id"] for s in segs] == [1, 1]  # the column mask is mostly covered: dropped
    assert len(torch.unique(ids)) == 2


def test_instance_inference_top_k_things_only():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    obj = torch.ones(3)
    out = instance_inference(probs, obj, _masks(), is_thing=[False, True], max_detections=2)
    assert out["classes"].tolist() == [1, 1]
    assert out["masks"].shape == (2, 4, 4)
    assert out["scores"][0] >= out["scores"][1]


def test_panoptic_ranks_class_agnostic_masks_by_their_own_scores():
    # Uncertain names (top probability 0.4 < threshold) but confident masks (e.g. SAM's IoU):
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]])
    obj = torch.tensor([0.95, 0.9, 0.2])
    assert panoptic_inference(probs, obj, _masks(), is_thing=[True] * 3)[1] == []
    ids, segs = panoptic_inference(probs, obj, _masks(), is_thing=[True] * 3, mask_scores=obj)
    assert [s["category_id"] for s in segs] == [0, 1]  # the low-quality third mask is dropped
    assert torch.allclose(torch.tensor([s["score"] for s in segs]), torch.tensor([0.95, 0.9]))
