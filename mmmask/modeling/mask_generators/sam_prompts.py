"""Prompts for SAM: checking user prompts, sampling prompts from masks, simulating clicks.

Pure functions on tensors. Coordinates are pixels in ``(x, y)`` order, boxes are ``XYXY``; a point
``(x, y)`` names the pixel ``mask[y, x]`` (SAM's prompt encoder shifts it to the pixel centre).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "as_prompt_tensors",
    "masks_to_boxes",
    "jitter_boxes",
    "sample_points",
    "correction_clicks",
    "mask_iou",
]


def _as_tensor(x, name: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array of numbers: {e}") from None


def _check_inside(xy: torch.Tensor, name: str, height: int, width: int) -> None:
    """``xy`` [..., 2] must lie in [0, W] x [0, H]."""
    bad = (xy[..., 0] < 0) | (xy[..., 0] > width) | (xy[..., 1] < 0) | (xy[..., 1] > height)
    if bad.any():
        shown = xy[bad][:5].tolist()
        raise ValueError(
            f"{name} outside the image of size (H={height}, W={width}): {int(bad.sum())} "
            f"coordinate pair(s) such as {shown} (x must be in [0, {width}], y in [0, {height}])"
        )


def as_prompt_tensors(
    image_size: tuple[int, int],
    point_coords=None,
    point_labels=None,
    boxes=None,
    mask_input=None,
    mask_input_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
    """Check user prompts of N objects and return them as tensors plus N.

    Args:
        image_size: (H, W) of the image the prompts refer to.
        point_coords: [N, P, 2] xy pixels. point_labels: [N, P], 1 positive / 0 negative.
        boxes: [N, 4] XYXY pixels. mask_input: [N, 1, h, w] low-res logits of a previous
            prediction (``mask_input_size`` = (h, w), 256 x 256 for the official SAM).
    Raises:
        ValueError: missing or empty prompts, mismatched lengths, wrong shapes, prompts
            outside the image.
    """
    h, w = image_size
    if point_coords is None and boxes is None and mask_input is None:
        raise ValueError("No prompt given: pass point_coords+point_labels, boxes or mask_input")
    coords = labels = box_t = mask_t = None
    counts: dict[str, int] = {}
    if point_coords is not None or point_labels is not None:
        if point_coords is None or point_labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        coords = _as_tensor(point_coords, "point_coords", torch.float32)
        labels = _as_tensor(point_labels, "point_labels", torch.int64)
        if coords.ndim != 3 or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be [N, P, 2] (x, y); got {list(coords.shape)}")
        if coords.shape[0] == 0 or coords.shape[1] == 0:
            raise ValueError(f"point_coords is empty: shape {list(coords.shape)}")
        if tuple(labels.shape) != tuple(coords.shape[:2]):
            raise ValueError(
                f"point_labels must be [N, P] = {list(coords.shape[:2])} to match point_coords; "
                f"got {list(labels.shape)}"
            )
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError("point_labels must be 1 (positive) or 0 (negative)")
        _check_inside(coords, "point_coords", h, w)
        counts["point_coords"] = coords.shape[0]
    if boxes is not None:
        box_t = _as_tensor(boxes, "boxes", torch.float32)
        if box_t.ndim != 2 or box_t.shape[-1] != 4:
            raise ValueError(f"boxes must be [N, 4] XYXY; got {list(box_t.shape)}")
        if box_t.shape[0] == 0:
            raise ValueError("boxes is empty")
        _check_inside(box_t.reshape(-1, 2, 2), "boxes", h, w)  # [N, 2 corners, xy]
        if ((box_t[:, 2] < box_t[:, 0]) | (box_t[:, 3] < box_t[:, 1])).any():
            raise ValueError(f"boxes must be XYXY with x0 <= x1 and y0 <= y1; got {box_t.tolist()}")
        counts["boxes"] = box_t.shape[0]
    if mask_input is not None:
        mask_t = _as_tensor(mask_input, "mask_input", torch.float32)
        want = [1, *mask_input_size] if mask_input_size else None
        if mask_t.ndim != 4 or (want and list(mask_t.shape[1:]) != want):
            shape = want or "1, h, w"
            raise ValueError(f"mask_input must be [N, {shape}]; got {list(mask_t.shape)}")
        counts["mask_input"] = mask_t.shape[0]
    if len(set(counts.values())) > 1:
        raise ValueError(f"Prompts disagree on the number of objects N: {counts}")
    return coords, labels, box_t, mask_t, next(iter(counts.values()))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes [N, 4] (pixel indices, inclusive) of bool masks [N, H, W]; empty -> 0."""
    n = masks.shape[0]
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    h, w = masks.shape[-2:]
    ys = torch.arange(h, device=masks.device).expand(n, h)
    xs = torch.arange(w, device=masks.device).expand(n, w)
    y0 = torch.where(rows, ys, h).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values
    x0 = torch.where(cols, xs, w).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def jitter_boxes(
    boxes: torch.Tensor, image_size: tuple[int, int], frac: float, max_px: float = 20.0
) -> torch.Tensor:
    """Move each XYXY coordinate by N(0, (frac * side)^2), clipped to +-max_px and the image."""
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)  # [N, 2]
    scale = (side.repeat(1, 2) * frac).clamp(max=max_px)  # [N, 4]: w, h, w, h
    noise = (torch.randn_like(boxes) * scale).clamp(-max_px, max_px)
    out = boxes + noise
    h, w = image_size
    out[:, 0::2] = out[:, 0::2].clamp(0, w - 1)
    out[:, 1::2] = out[:, 1::2].clamp(0, h - 1)
    x0, x1 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y0, y1 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def _far_from_border(region: np.ndarray) -> tuple[int, int, float]:
    """(x, y, distance) of the pixel of ``region`` farthest from its border (image edge counts)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y), float(dist[y, x])


def sample_points(masks: torch.Tensor, mode: str = "random") -> torch.Tensor:
    """One point [N, 2] (xy) inside each bool mask [N, H, W].

    ``mode="random"``: uniform over the mask's pixels; ``"center"``: the pixel farthest from the
    mask border (deterministic). An empty mask gives its image centre.
    """
    if mode not in ("random", "center"):
        raise ValueError(f"mode must be 'random' or 'center'; got {mode!r}")
    n, h, w = masks.shape
    out = torch.empty(n, 2)
    flat = masks.reshape(n, h * w).float()  # [N, H*W]
    for i in range(n):
        if flat[i].sum() == 0:
            out[i] = torch.tensor([w // 2, h // 2])
        elif mode == "random":
            idx = int(torch.multinomial(flat[i], 1))
            out[i] = torch.tensor([idx % w, idx // w])
        else:
            x, y, _ = _far_from_border(masks[i].cpu().numpy())
            out[i] = torch.tensor([x, y])
    return out.to(masks.device)


def correction_clicks(
    pred: torch.Tensor, gt: torch.Tensor, mode: str = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next click per object from the error between bool masks ``pred`` and ``gt`` [N, H, W].

    False negatives (``gt & ~pred``) give a positive click, false positives a negative one, taken
    from the larger error region (by area for ``"random"``, by distance to the region's border for
    ``"center"``, as in the NoC protocol). Returns coords [N, 2] (xy) and labels [N] (1 / 0).
    A perfect prediction gets a positive click inside ``gt``.
    """
    fn, fp = gt & ~pred, pred & ~gt
    n = gt.shape[0]
    coords = torch.empty(n, 2)
    labels = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        if mode == "center":
            fx, fy, fd = _far_from_border(fn[i].cpu().numpy())
            px, py, pd = _far_from_border(fp[i].cpu().numpy())
            positive = fd >= pd
            if fd == 0 and pd == 0:  # no error: click inside the object
                coords[i] = sample_points(gt[i : i + 1], "center")[0].cpu()
            else:
                coords[i] = torch.tensor([fx, fy] if positive else [px, py], dtype=torch.float32)
        else:
            positive = bool(fn[i].sum() >= fp[i].sum())
            region = (fn if positive else fp)[i : i + 1]
            if not region.any():
                region = gt[i : i + 1]
            coords[i] = sample_points(region, "random")[0].cpu()
        labels[i] = int(positive)
    return coords.to(gt.device), labels.to(gt.device)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU [...] of bool masks [..., H, W]; two empty masks have IoU 1."""
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
