"""IoU matching of predicted masks to ground truth, and the mask consistency loss.

Mask-Adapter pairs each predicted mask with the ground-truth mask it overlaps most (IoU matching,
not Hungarian assignment: several predictions may match one GT object). The masks matched to one
object form a *consistency group*; the consistency loss pulls the embeddings of a group together,
so that masks of similar quality (similar IoU to the same object) are named the same way.

All functions here are pure and work on plain tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TRAIN_MASK_MODES",
    "mask_iou",
    "iou_match",
    "build_adapter_targets",
    "collate_adapter_targets",
    "consistency_loss",
]

# Which masks the adapter is trained on: the GT masks only, or GT + predicted masks.
TRAIN_MASK_MODES = ("gt", "mixed")


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of every predicted mask with every GT mask.

    Args:
        pred: [P, HW] bool or float masks (floats are used as they are: a soft IoU).
        gt: [G, HW] bool or float masks.

    Returns:
        [P, G] float IoU; 0 where both masks are empty.
    """
    if pred.dim() != 2 or gt.dim() != 2 or pred.shape[1] != gt.shape[1]:
        raise ValueError(
            f"mask_iou needs pred [P, HW] and gt [G, HW] with the same HW; got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    p = pred.float()
    g = gt.to(device=p.device).float()
    inter = p @ g.t()  # [P, G]
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter  # [P, G]
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(inter))


def _binarize(masks: Tensor, size: tuple[int, int] | None, threshold: float) -> Tensor:
    """[N, H, W] bool or probability masks -> [N, H', W'] bool at ``size`` (bilinear resize)."""
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(
            masks[:, None].float(), size=size, mode="bilinear", align_corners=False
        )[:, 0]
    if masks.dtype == torch.bool:
        return masks
    return masks > threshold


def iou_match(
    pred_masks: Tensor,
    gt_masks: Tensor,
    threshold: float,
    *,
    mask_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Match every predicted mask to the GT mask of highest IoU, if that IoU >= ``threshold``.

    Not a one-to-one assignment: several predictions may match the same GT mask.

    Args:
        pred_masks: [P, h, w] bool masks or probabilities (binarised at ``mask_threshold``);
            resized to the GT size when it differs.
        gt_masks: [G, H, W] bool (or 0/1) masks.
        threshold: the smallest IoU that counts as a match (inclusive).
        mask_threshold: probability above which a float pixel is inside the mask.

    Returns:
        matched_gt: LongTensor [P], index of the matched GT mask or -1 for none.
        ious: [P, G] IoU of every prediction with every GT mask.
    """
    if pred_masks.dim() != 3 or gt_masks.dim() != 3:
        raise ValueError(
            f"iou_match needs pred_masks [P, h, w] and gt_masks [G, H, W]; got "
            f"{tuple(pred_masks.shape)} and {tuple(gt_masks.shape)}"
        )
    num_pred, num_gt = pred_masks.shape[0], gt_masks.shape[0]
    device = pred_masks.device
    size = tuple(gt_masks.shape[-2:])
    if num_pred == 0 or num_gt == 0:
        return (
            torch.full((num_pred,), -1, dtype=torch.long, device=device),
            torch.zeros(num_pred, num_gt, device=device),
        )
    pred = _binarize(pred_masks.detach(), size, mask_threshold).flatten(1)  # [P, HW]
    gt = _binarize(gt_masks.to(device), None, mask_threshold).flatten(1)  # [G, HW]
    ious = mask_iou(pred, gt)  # [P, G]
    best_iou, best_gt = ious.max(dim=1)  # [P], [P]
    matched = torch.where(best_iou >= threshold, best_gt, torch.full_like(best_gt, -1))
    return matched, ious


def build_adapter_targets(
    pred_masks: Tensor | None,
    gt_masks: Tensor,
    gt_classes: Tensor,
    threshold: float,
    mode: str = "gt",
    num_pred: int = 16,
    *,
    unmatched_label: int = -1,
) -> tuple[Tensor, Tensor, Tensor]:
    """The masks of one image that the adapter is trained on, their classes and groups.

    Args:
        pred_masks: [P, h, w] predicted mask probabilities (sigmoid applied), or None in "gt"
            mode. They are detached and resized to the GT size.
        gt_masks: [G, H, W] bool GT masks; gt_classes: [G] class index of each.
        threshold: IoU threshold of :func:`iou_match`.
        mode: "gt" (the GT masks only) or "mixed" (GT masks + up to ``num_pred`` predicted masks,
            those of highest IoU with any GT first, each labelled by its IoU match).
        num_pred: most predicted masks kept in "mixed" mode.
        unmatched_label: class of a predicted mask that matches no GT (the void class C, or -1 to
            ignore it in the cross-entropy).

    Returns:
        masks: [M, H, W] float masks in [0, 1] to classify (GT masks first).
        classes: LongTensor [M] class targets.
        groups: LongTensor [M] consistency group (the index of the GT object; -1 = none).
    """
    if mode not in TRAIN_MASK_MODES:
        raise ValueError(f"Unknown adapter training mode {mode!r}; valid: {TRAIN_MASK_MODES}")
    if gt_masks.dim() != 3 or gt_classes.shape != gt_masks.shape[:1]:
        raise ValueError(
            f"gt_masks must be [G, H, W] and gt_classes [G]; got {tuple(gt_masks.shape)} and "
            f"{tuple(gt_classes.shape)}"
        )
    device = gt_masks.device
    masks = gt_masks.float()  # [G, H, W]
    classes = gt_classes.long()
    groups = torch.arange(gt_masks.shape[0], dtype=torch.long, device=device)
    if mode == "gt" or num_pred <= 0:
        return masks, classes, groups
    if pred_masks is None:
        raise ValueError("build_adapter_targets in 'mixed' mode needs pred_masks")
    pred = pred_masks.detach().float().to(device)
    if pred.dim() != 3:
        raise ValueError(f"pred_masks must be [P, h, w]; got {tuple(pred.shape)}")
    if tuple(pred.shape[-2:]) != tuple(gt_masks.shape[-2:]):
        pred = F.interpolate(
            pred[:, None], size=gt_masks.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
    matched, ious = iou_match(pred, gt_masks, threshold)  # [P], [P, G]
    best = ious.max(dim=1).values if ious.shape[1] > 0 else torch.zeros(len(pred), device=device)
    keep = torch.argsort(best, descending=True, stable=True)[:num_pred]  # [P']
    pred_match = matched[keep]
    pred_classes = torch.where(
        pred_match >= 0,
        classes[pred_match.clamp(min=0)] if len(classes) else pred_match,
        torch.full_like(pred_match, unmatched_label),
    )
    return (
        torch.cat([masks, pred[keep].clamp(0, 1)]),
        torch.cat([classes, pred_classes]),
        torch.cat([groups, pred_match]),
    )


def collate_adapter_targets(
    targets: list[tuple[Tensor, Tensor, Tensor]],
) -> tuple[Tensor, Tensor, Tensor]:
    """Pad per-image ``build_adapter_targets`` outputs into a batch.

    Args:
        targets: B tuples (masks [M_i, H, W], classes [M_i], groups [M_i]), one image size.

    Returns:
        masks [B, M, H, W] (zeros as padding), classes [B, M] and groups [B, M] (-1 padding),
        where M = max M_i (at least 1, so that shapes stay valid).
    """
    if not targets:
        raise ValueError("collate_adapter_targets needs at least one image")
    size = tuple(targets[0][0].shape[-2:])
    if any(tuple(t[0].shape[-2:]) != size for t in targets):
        raise ValueError("All images of a batch must have masks of one size; resize them first")
    num = max(1, max(t[0].shape[0] for t in targets))
    b = len(targets)
    device = targets[0][0].device
    masks = torch.zeros(b, num, *size, device=device)
    classes = torch.full((b, num), -1, dtype=torch.long, device=device)
    groups = torch.full((b, num), -1, dtype=torch.long, device=device)
    for i, (m, c, g) in enumerate(targets):
        masks[i, : len(m)] = m.float()
        classes[i, : len(c)] = c
        groups[i, : len(g)] = g
    return masks, classes, groups


def consistency_loss(embeddings: Tensor, groups: Tensor) -> Tensor:
    """Mask consistency loss: embeddings of masks matched to one object should agree.

    For every group with at least two members, the mean over members of
    ``1 - cos(e_i, mean of the group)``; the result is the mean over such groups, and 0 (still
    attached to the graph) when there is none.

    Args:
        embeddings: [B, Q, D] (or [N, D]) mask embeddings.
        groups: [B, Q] (or [N]) group ids; groups are per image (the same id in two images names
            two groups); -1 = in no group.

    Returns:
        scalar loss.
    """
    if embeddings.dim() == 2:
        embeddings, groups = embeddings[None], groups[None]
    if embeddings.shape[:2] != groups.shape:
        raise ValueError(
            f"groups {tuple(groups.shape)} must match embeddings {tuple(embeddings.shape)}[:2]"
        )
    b, q, d = embeddings.shape
    emb = F.normalize(embeddings.reshape(b * q, d), dim=-1)  # [N, D]
    groups = groups.to(emb.device).long()
    stride = int(groups.max().item()) + 1 if groups.numel() else 1
    batch_idx = torch.arange(b, device=emb.device)[:, None].expand(b, q)
    key = torch.where(groups >= 0, batch_idx * stride + groups, torch.full_like(groups, -1))
    key = key.reshape(-1)  # [N]
    valid = key >= 0
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    uniq, inv = torch.unique(key[valid], return_inverse=True)  # [U], [N_valid]
    e = emb[valid]  # [N_valid, D]
    ones = torch.ones_like(inv, dtype=e.dtype)
    counts = torch.zeros(len(uniq), device=e.device, dtype=e.dtype).index_add_(0, inv, ones)
    sums = torch.zeros(len(uniq), d, device=e.device, dtype=e.dtype).index_add_(0, inv, e)
    centre = F.normalize(sums, dim=-1)  # [U, D]
    member_loss = 1.0 - (e * centre[inv]).sum(-1)  # [N_valid]
    group_loss = torch.zeros(len(uniq), device=e.device, dtype=e.dtype).index_add_(
        0, inv, member_loss
    ) / counts.clamp(min=1)
    real = counts >= 2
    if not bool(real.any()):
        return embeddings.sum() * 0.0
    return group_loss[real].mean()
