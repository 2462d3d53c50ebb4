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


def test_leftover_masks_are_the_uncovered_regions_largest_first():
    from mmmask.modeling.postprocess import leftover_masks

    probs = torch.zeros(2, 2, 10, 12)
    probs[0, 0, :, 3:8] = 0.9  # a band leaves 10x3 on the left ...
    probs[0, 1, :, 8:10] = 0.9  # ... and this one, of low objectness, hardly covers anything
    objectness = torch.tensor([[1.0, 0.3], [1.0, 1.0]])
    masks, found = leftover_masks(probs, objectness, max_regions=3, min_area=0.0)
    assert masks.shape == (2, 3, 10, 12)
    assert found.tolist() == [[True, True, False], [True, False, False]]
    right = masks[0, 0]  # the larger region first: columns 8-11, 0.73 left over under the band
    assert torch.allclose(right[:, 8:10], torch.full((10, 2), 0.73))
    assert torch.allclose(right[:, 10:], torch.ones(10, 2)) and right[:, :8].sum() == 0
    assert torch.allclose(masks[0, 1][:, :3], torch.ones(10, 3)) and masks[0, 1][:, 3:].sum() == 0
    assert masks[0, 2].sum() == 0
    assert torch.allclose(masks[1, 0], torch.ones(10, 12))  # nothing covered: the whole frame
    # regions under min_area are dropped, and padding never becomes a region
    _, found = leftover_masks(probs[:1], objectness[:1], 3, min_area=35 / 120)
    assert found.tolist() == [[True, False, False]]
    padded, found = leftover_masks(probs[1:], objectness[1:], 2, valid=[(6, 5)])
    assert found.tolist() == [[True, False]] and padded[0, 0].sum() == 30
    assert padded[0, 0][:6, :5].sum() == 30
    none, found = leftover_masks(probs, objectness, 0)
    assert none.shape == (2, 0, 10, 12) and found.shape == (2, 0)


def test_leftover_tiles_cut_the_region_by_a_grid():
    from mmmask.modeling.postprocess import leftover_tiles

    region = torch.zeros(8, 8)
    region[4:] = 0.9  # the bottom half
    region[3, :2] = 0.9  # half of the tile at rows 2-3, cols 0-1
    bottom = [(4, 6, x, x + 2) for x in (0, 2, 4, 6)] + [(6, 8, x, x + 2) for x in (0, 2, 4, 6)]
    pieces, boxes = leftover_tiles(region, grid=4, min_fill=0.6)
    assert boxes == bottom
    for piece, (y0, y1, x0, x1) in zip(pieces, boxes):
        assert torch.equal(piece[y0:y1, x0:x1], region[y0:y1, x0:x1])
        assert piece.sum() == region[y0:y1, x0:x1].sum()  # nothing outside its tile
    assert leftover_tiles(region, grid=4)[1] == [(2, 4, 0, 2)] + bottom  # half full: min_fill 0.5
    # only the frame the image covers is tiled (the rest is padding)
    assert leftover_tiles(region, grid=2, valid=(8, 4))[1] == [(4, 8, 0, 2), (4, 8, 2, 4)]
    pieces, boxes = leftover_tiles(torch.zeros(8, 8), grid=4)
    assert pieces.shape == (0, 8, 8) and boxes == []


def test_split_by_tile_names_cuts_where_the_names_change():
    from mmmask.modeling.postprocess import leftover_tiles, split_by_tile_names

    region = torch.zeros(12, 12)
    region[3:] = 0.9
    region[3:, 11] = 0.9
    pieces, boxes = leftover_tiles(region, grid=4, min_fill=0.9)  # 3x3 tiles; rows 3-11
    labels = [7 if x0 < 6 else 2 for _, _, x0, _ in boxes]  # left half 7, right half 2
    parts = split_by_tile_names(region, boxes, labels)
    assert parts.shape == (2, 12, 12)
    inside = [p > 0.5 for p in parts]
    assert not (inside[0] & inside[1]).any()
    assert torch.equal(inside[0] | inside[1], region > 0.5)  # the parts tile the region
    assert inside[0][3:, :6].all() and not inside[0][:, 6:].any()  # the name of most tiles first
    assert torch.equal(parts.sum(0), region)  # probabilities kept
    # a name that a stray tile carries (1 of 12) cuts nothing unless min_share allows it
    stray = [7] * len(boxes)
    stray[5] = 2
    assert split_by_tile_names(region, boxes, stray).shape[0] == 1
    assert split_by_tile_names(region, boxes, stray, min_share=0.0).shape[0] == 2
    assert split_by_tile_names(region, boxes, labels, max_parts=1).shape[0] == 1
    assert torch.equal(split_by_tile_names(region, boxes, [7] * len(boxes))[0], region)
    # pixels of the region outside every named tile join the nearest name
    region2 = region.clone()
    region2[0:3, 9:] = 0.9  # top-right corner: in a tile the region fills only partly
    parts = split_by_tile_names(region2, boxes, labels)
    assert (parts[1][0:3, 9:] > 0.5).all()
    # a part smaller than min_pixels joins the largest
    parts = split_by_tile_names(region, boxes, labels, min_pixels=200)
    assert parts.shape[0] == 1 and torch.equal(parts[0], region)


def _disc(size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return ((ys - cy) ** 2 + (xs - cx) ** 2 <= r * r).float()


def test_neck_parts_cut_touching_blobs_but_not_single_shapes():
    from mmmask.modeling.postprocess import neck_parts

    two = torch.maximum(_disc(64, 32, 18, 10), _disc(64, 32, 37, 10)) * 0.9  # a 6-px neck
    parts = neck_parts(two, depth=0.5, min_core=4)
    assert parts.shape == (2, 64, 64)
    assert torch.equal(parts.sum(0), two)  # a partition of the mask, probabilities kept
    left, right = (p > 0.5 for p in parts)
    assert left[:, :27].sum() == two[:, :27].gt(0.5).sum() and not left[:, 29:].any()
    assert right[:, 29:].sum() == two[:, 29:].gt(0.5).sum()
    # separate blobs are cut too; the largest core comes first
    apart = torch.maximum(_disc(64, 12, 12, 6), _disc(64, 44, 44, 12))
    big, small = neck_parts(apart, min_core=4)
    assert big[44, 44] == 1 and small[12, 12] == 1 and big.sum() > small.sum()
    # convex shapes have one core at any depth; a cross and a ring are not cut either
    square = torch.zeros(64, 64)
    square[10:50, 5:60] = 1
    cross = torch.zeros(64, 64)
    cross[26:38, 8:56] = cross[8:56, 26:38] = 1
    ring = _disc(64, 32, 32, 24) * (1 - _disc(64, 32, 32, 13))
    for shape in (_disc(64, 32, 32, 20), square, cross, ring):
        for depth in (0.3, 0.5, 0.7):
            assert neck_parts(shape, depth=depth, min_core=4).shape == (1, 64, 64)
    # a wide neck, cores under min_core, max_parts and an empty mask
    assert neck_parts(two, depth=0.2, min_core=4).shape[0] == 1
    assert neck_parts(apart, min_core=200).shape[0] == 1
    assert neck_parts(apart, min_core=4, max_parts=1).shape[0] == 1
    assert torch.equal(neck_parts(torch.zeros(8, 8))[0], torch.zeros(8, 8))
