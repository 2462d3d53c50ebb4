"""Pure post-processing: synonym max, class ensembling, semantic/panoptic/instance inference.

Shapes: Q masks per image, C classes, masks as Tensor[Q,H,W] logits, class probabilities as
Tensor[Q,C] (void excluded; ``objectness`` Tensor[Q] is the probability of "not void").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "max_over_synonyms",
    "combine_class_probs",
    "semantic_inference",
    "panoptic_inference",
    "instance_inference",
]


def max_over_synonyms(logits: torch.Tensor, syn_to_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Tensor[..., S+1] synonym logits (last = void) -> Tensor[..., C+1], max over each class's synonyms."""
    syn, void = logits[..., :-1], logits[..., -1:]
    if syn.shape[-1] == num_classes:  # one synonym per class
        return logits
    shape = syn.shape[:-1] + (num_classes,)
    out = syn.new_full(shape, float("-inf"))
    index = syn_to_class.to(syn.device).expand_as(syn)
    out = out.scatter_reduce(-1, index, syn, reduce="amax", include_self=True)
    return torch.cat([out, void], dim=-1)


def combine_class_probs(classifier_logits: torch.Tensor, generator_logits: torch.Tensor | None,
                        seen: torch.Tensor | None = None, ensemble: bool = False,
                        alpha: float = 0.4, beta: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities Tensor[...,C] and objectness Tensor[...] from [...,C+1] logits.

    The class distribution comes from the mask classifier; objectness (1 - void) from the mask
    generator when it has class logits. With ``ensemble`` (FC-CLIP's geometric ensemble) the
    generator's in-vocabulary distribution is mixed in: ``p_in^(1-a) * p_out^a`` with
    ``a = alpha`` for classes seen in training and ``beta`` for the others.
    """
    p_out = classifier_logits[..., :-1].softmax(dim=-1)
    if generator_logits is None:
        return p_out, classifier_logits.softmax(dim=-1)[..., :-1].sum(dim=-1)
    gen = generator_logits.softmax(dim=-1)
    objectness = 1.0 - gen[..., -1]
    if ensemble:
        p_in = generator_logits[..., :-1].softmax(dim=-1)
        a = torch.full_like(p_out[..., :1].expand_as(p_out), beta)
        if seen is not None:
            a = torch.where(seen.to(p_out.device).bool(), torch.full_like(a, alpha), a)
        probs = p_in.clamp_min(1e-8) ** (1 - a) * p_out.clamp_min(1e-8) ** a
        p_out = probs / probs.sum(dim=-1, keepdim=True)
    return p_out, objectness


def leftover_masks(mask_probs: torch.Tensor, objectness: torch.Tensor, max_regions: int,
                   min_area: float = 0.01, valid: list[tuple[int, int]] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic proposals for what no mask covers: the connected regions of the leftover.

    A mask generator trained on some classes can learn to leave others uncovered (e.g. stuff
    whose pixels were ignored in training). The leftover of each image, ``1 - max_q(objectness_q
    x mask_q)``, is split into 4-connected regions where it exceeds 0.5; the ``max_regions``
    largest regions with at least ``min_area`` of the image become masks (the leftover inside the
    region) for the classifier to name.

    Args:
        mask_probs: [B, Q, h, w] mask probabilities; objectness: [B, Q].
        valid: per image, the (rows, cols) of the mask frame it covers (the rest is padding);
            default the whole frame.

    Returns:
        ``(masks [B, K, h, w] probabilities, found [B, K] bool)`` with ``K = max_regions``;
        slots without a region hold empty masks and ``found = False``.
    """
    from scipy import ndimage

    b, _, h, w = mask_probs.shape
    k = int(max_regions)
    out = mask_probs.new_zeros(b, k, h, w)
    found = torch.zeros(b, k, dtype=torch.bool, device=mask_probs.device)
    if k <= 0 or b == 0:
        return out, found
    cover = (mask_probs * objectness[..., None, None]).amax(1) if mask_probs.shape[1] else \
        mask_probs.new_zeros(b, h, w)
    left = (1 - cover).clamp(0, 1)
    for i in range(b):
        vh, vw = valid[i] if valid is not None else (h, w)
        region = (left[i] > 0.5).cpu().numpy()
        region[vh:, :] = False
        region[:, vw:] = False
        labels, n = ndimage.label(region)
        if n == 0:
            continue
        areas = ndimage.sum_labels(region, labels, index=range(1, n + 1))
        order = [j for j in areas.argsort()[::-1] if areas[j] >= min_area * vh * vw][:k]
        labels_t = torch.from_numpy(labels).to(mask_probs.device)
        for slot, j in enumerate(order):
            out[i, slot] = left[i] * (labels_t == j + 1)
            found[i, slot] = True
    return out, found


def leftover_tiles(region: torch.Tensor, grid: int, valid: tuple[int, int] | None = None,
                   min_fill: float = 0.5) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The pieces of a leftover region that a ``grid`` x ``grid`` tiling of the frame cuts out.

    Args:
        region: Tensor[h, w] probabilities (a :func:`leftover_masks` output).
        valid: the (rows, cols) of the frame the image covers (default the whole frame).
        min_fill: a tile gives a piece only where the region (> 0.5) fills this share of it.

    Returns:
        ``(pieces Tensor[T, h, w], boxes)``: the region inside each such tile, and the tiles as
        ``(y0, y1, x0, x1)``.
    """
    h, w = region.shape
    vh, vw = valid if valid is not None else (h, w)
    ys = [round(vh * j / grid) for j in range(grid + 1)]
    xs = [round(vw * j / grid) for j in range(grid + 1)]
    # every tile's filled pixels at once from the summed-area table (one device sync in all)
    table = F.pad((region > 0.5).float().cumsum(0).cumsum(1), (1, 0, 1, 0))
    y0s, y1s = torch.tensor(ys[:-1]), torch.tensor(ys[1:])
    x0s, x1s = torch.tensor(xs[:-1]), torch.tensor(xs[1:])
    filled = (table[y1s][:, x1s] - table[y0s][:, x1s] - table[y1s][:, x0s]
              + table[y0s][:, x0s]).tolist()
    pieces, boxes = [], []
    for r, (y0, y1) in enumerate(zip(ys[:-1], ys[1:])):
        for c, (x0, x1) in enumerate(zip(xs[:-1], xs[1:])):
            area = (y1 - y0) * (x1 - x0)
            if area == 0 or filled[r][c] < min_fill * area:
                continue
            piece = torch.zeros_like(region)
            piece[y0:y1, x0:x1] = region[y0:y1, x0:x1]
            pieces.append(piece)
            boxes.append((y0, y1, x0, x1))
    out = torch.stack(pieces) if pieces else region.new_zeros(0, h, w)
    return out, boxes


def split_by_tile_names(region: torch.Tensor, boxes: list[tuple[int, int, int, int]],
                        labels: list[int], max_parts: int = 2, min_share: float = 0.25,
                        min_pixels: int = 1) -> torch.Tensor:
    """Cut a region where the names of its tiles (:func:`leftover_tiles`) change.

    The names carried by the most tiles (at most ``max_parts``, each by at least ``min_share`` of
    the tiles, so that a stray misnamed tile cuts nothing) each get a part; tiles of the other
    names count for the most common one. Every pixel of the region joins the name of its own
    tile, or outside the named tiles the name whose tiles lie nearest (the tiles of each name
    painted on a map, box-blurred over one tile's size; the highest map wins). A part under
    ``min_pixels`` (> 0.5) joins the largest.

    Returns:
        Tensor[P, h, w]: the region cut into ``P >= 1`` parts (``P = 1``: ``region`` itself).
    """
    from collections import Counter

    from mmmask.modeling.mask_refine import box_filter

    counts = Counter(labels).most_common()
    names = [c for j, (c, n) in enumerate(counts[:max(1, max_parts)])
             if j == 0 or n >= min_share * len(labels)]
    if len(names) < 2:
        return region[None]
    h, w = region.shape
    votes = region.new_zeros(len(names), h, w)
    for (y0, y1, x0, x1), label in zip(boxes, labels):
        votes[names.index(label) if label in names else 0, y0:y1, x0:x1] = 1
    size = max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in boxes)
    near = box_filter(votes[None], radius=max(1, size))[0]
    owner = near.argmax(0)
    owner[near.amax(0) <= 0] = 0  # out of reach of every tile: the most common name
    for (y0, y1, x0, x1), label in zip(boxes, labels):  # a named tile keeps its own name
        owner[y0:y1, x0:x1] = names.index(label) if label in names else 0
    inside = region > 0.5
    for j in range(len(names) - 1, 0, -1):  # small parts join the largest
        if ((owner == j) & inside).sum().item() < min_pixels:
            owner[owner == j] = 0
    parts = [region * (owner == j) for j in range(len(names))
             if ((owner == j) & inside).any()]
    return torch.stack(parts) if parts else region[None]


def neck_parts(mask: torch.Tensor, depth: float = 0.5, min_core: int = 4,
               max_parts: int = 4) -> torch.Tensor:
    """The parts of a mask that narrow necks (or gaps) separate: two touching objects in one mask.

    Inside the mask (> 0.5), each pixel's distance to the outline is measured; the pixels at
    least ``depth`` times the deepest of their connected component form cores, and each core of
    at least ``min_core`` pixels seeds a part (at most ``max_parts``, the largest cores).
    Every pixel of the mask joins the part of the nearest core. A convex shape has a single core
    at any depth, so only masks pinched between blobs (or made of separate blobs) are cut.

    Returns:
        Tensor[P, h, w]: the mask's probabilities inside each part; ``P = 1`` (the mask itself)
        when nothing is cut.
    """
    from scipy import ndimage

    inside = (mask > 0.5).cpu().numpy()
    if not inside.any():
        return mask[None]
    comps, n = ndimage.label(inside)
    dist = ndimage.distance_transform_edt(inside)
    deepest = ndimage.maximum(dist, comps, index=np.arange(1, n + 1))
    cores, k = ndimage.label(inside & (dist >= depth * np.asarray(deepest)[comps - 1]))
    sizes = np.bincount(cores.ravel(), minlength=k + 1)[1:]
    keep = [j + 1 for j in np.argsort(-sizes, kind="stable")[:max_parts] if sizes[j] >= min_core]
    if len(keep) < 2:
        return mask[None]
    seeds = np.isin(cores, keep)
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    owner = torch.from_numpy(cores[iy, ix]).to(mask.device)
    return torch.stack([mask * (owner == j) for j in keep])


def semantic_inference(probs: torch.Tensor, objectness: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Tensor[C,H,W] class scores: sum over masks of class probability x mask probability."""
    scores = probs * objectness[:, None]  # (Q, C)
    return torch.einsum("qc,qhw->chw", scores, masks.sigmoid())


def panoptic_inference(probs: torch.Tensor, objectness: torch.Tensor, masks: torch.Tensor,
                       is_thing: list[bool], object_mask_threshold: float = 0.5,
                       overlap_threshold: float = 0.8, mask_scores: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, list[dict]]:
    """Mask2Former-style panoptic merge.

    Masks are kept and ordered by their score, the top class probability x objectness, or
    ``mask_scores`` Tensor[Q] when given (e.g. SAM's predicted IoU: masks from a class-agnostic
    generator are judged by their quality, and named by their top class).
    Returns ``(ids Tensor[H,W] int32 with 0 = void, segments_info)``; stuff segments of one class
    are merged. ``segments_info`` entries: ``{"id", "category_id", "isthing", "score", "area"}``.
    """
    scores, labels = (probs * objectness[:, None]).max(dim=-1)  # (Q,)
    if mask_scores is not None:
        scores = mask_scores.to(scores)
    keep = scores > object_mask_threshold
    h, w = masks.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=masks.device)
    segments: list[dict] = []
    if keep.sum() == 0:
        return panoptic, segments
    cur_scores, cur_labels = scores[keep], labels[keep]
    cur_masks = masks[keep].sigmoid()
    owner = (cur_scores[:, None, None] * cur_masks).argmax(dim=0)  # (H, W)
    stuff_ids: dict[int, int] = {}
    for k in torch.argsort(cur_scores, descending=True).tolist():
        cls = int(cur_labels[k])
        thing = bool(is_thing[cls]) if cls < len(is_thing) else True
        region = (owner == k) & (cur_masks[k] >= 0.5)
        original = int((cur_masks[k] >= 0.5).sum())
        area = int(region.sum())
        if original == 0 or area == 0 or area / original < overlap_threshold:
            continue
        if not thing and cls in stuff_ids:
            panoptic[region] = stuff_ids[cls]
            seg = next(s for s in segments if s["id"] == stuff_ids[cls])
            seg["area"] += area
            continue
        sid = len(segments) + 1
        if not thing:
            stuff_ids[cls] = sid
        panoptic[region] = sid
        segments.append({"id": sid, "category_id": cls, "isthing": thing,
                         "score": float(cur_scores[k]), "area": area})
    return panoptic, segments


def instance_inference(probs: torch.Tensor, objectness: torch.Tensor, masks: torch.Tensor,
                       is_thing: list[bool], max_detections: int = 100) -> dict[str, torch.Tensor]:
    """Top-k (mask, class) pairs over thing classes; score = class score x mask confidence.

    Returns ``{"masks": bool Tensor[N,H,W], "scores": Tensor[N], "classes": long Tensor[N]}``.
    """
    q, c = probs.shape
    scores = probs * objectness[:, None]
    thing = torch.tensor([bool(t) for t in is_thing[:c]] + [True] * max(0, c - len(is_thing)),
                         device=scores.device)
    scores = scores.masked_fill(~thing[None, :], 0.0).flatten()
    k = min(max_detections, scores.numel())
    top, idx = scores.topk(k)
    query, classes = idx // c, idx % c
    keep = top > 0
    query, classes, top = query[keep], classes[keep], top[keep]
    prob = masks[query].sigmoid()
    binary = prob > 0.5
    mask_score = (prob * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp_min(1)
    return {"masks": binary, "scores": top * mask_score, "classes": classes}


def resize_masks(masks: torch.Tensor, size: tuple[int, int], crop: tuple[int, int] | None = None) -> torch.Tensor:
    """Tensor[Q,h,w] logits -> Tensor[Q,H,W]: optionally crop the padded area, then resize."""
    if crop is not None:
        masks = masks[..., : crop[0], : crop[1]]
    if masks.shape[-2:] == tuple(size):
        return masks
    return F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]
