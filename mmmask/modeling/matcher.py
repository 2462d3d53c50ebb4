"""Hungarian matching of predicted masks (queries) to ground-truth masks.

The cost of assigning query ``q`` to target ``n`` is ``cost_class * (-p_q(class_n))
+ cost_mask * BCE(mask_q, mask_n) + cost_dice * dice(mask_q, mask_n)``;
mask costs are computed on ``num_points`` random points shared by predictions and targets of an
image (or on every pixel of the prediction grid when ``num_points == 0``). The optimal one-to-one
assignment is found with ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .point_sample import point_sample, resize_masks

__all__ = [
    "HungarianMatcher",
    "hungarian_match",
    "pairwise_sigmoid_bce",
    "pairwise_dice",
]

# Non-finite costs (overflow in low precision) are replaced by this so the assignment still runs.
_LARGE_COST = 1e8


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of rows (predictions) to columns (targets).

    Args:
        cost: Tensor[Q, N]; rectangular is fine (``min(Q, N)`` pairs are returned).

    Returns:
        ``(rows, cols)``: two int64 Tensor[min(Q, N)] on the CPU, ``rows`` ascending; row
        ``rows[i]`` is assigned to column ``cols[i]``.
    """
    if cost.dim() != 2:
        raise ValueError(f"cost must be a 2-D [Q, N] matrix; got shape {tuple(cost.shape)}")
    c = cost.detach().to(device="cpu", dtype=torch.float64)
    c = torch.nan_to_num(c, nan=_LARGE_COST, posinf=_LARGE_COST, neginf=-_LARGE_COST)
    rows, cols = linear_sum_assignment(c.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid binary cross-entropy between every prediction and every target.

    Args:
        logits: Tensor[Q, P] mask logits at P points.
        targets: Tensor[N, P] target values in [0, 1] at the same points.

    Returns:
        Tensor[Q, N].
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    # BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0), summed over points by a matrix product.
    return (pos @ targets.T + neg @ (1.0 - targets).T) / max(num_points, 1)


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss ``1 - (2|p t| + 1) / (|p| + |t| + 1)`` between every prediction and target.

    Args:
        logits: Tensor[Q, P] mask logits.
        targets: Tensor[N, P] target values in [0, 1].

    Returns:
        Tensor[Q, N].
    """
    probs = logits.sigmoid()
    inter = 2.0 * (probs @ targets.T)  # [Q,N]
    total = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]  # [Q,1] + [1,N]
    return 1.0 - (inter + 1.0) / (total + 1.0)


class HungarianMatcher(nn.Module):
    """Matches the queries of each image to its targets by class and mask costs.

    Args:
        cost_class: weight of ``-p(target class)``.
        cost_mask: weight of the sigmoid BCE mask cost.
        cost_dice: weight of the dice mask cost.
        num_points: points sampled per mask for the mask costs; 0 = every pixel of the
            prediction grid (targets are area-resized to it).
    """

    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher needs at least one non-zero cost weight")
        if num_points < 0:
            raise ValueError(f"num_points must be >= 0; got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(self, pred_logits: Tensor, pred_masks: Tensor, target: Mapping) -> Tensor:
        """Matching cost of one image.

        Args:
            pred_logits: Tensor[Q, C+1] class logits (index C = void).
            pred_masks: Tensor[Q, h, w] mask logits.
            target: ``{"masks": Tensor[N, H, W], "classes": long Tensor[N]}``; class ids index
                the first C logits.

        Returns:
            Tensor[Q, N] float32.
        """
        classes = target["classes"].to(pred_logits.device).long()
        num_classes = pred_logits.shape[-1] - 1
        if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(
                f"target class ids must be in [0, {num_classes}) (the vocabulary); "
                f"got {classes.tolist()}"
            )
        prob = pred_logits.float().softmax(-1)  # [Q,C+1]
        cost = -prob[:, classes] * self.cost_class  # [Q,N]
        if self.cost_mask == 0 and self.cost_dice == 0:
            return cost
        pred = pred_masks.float()
        tgt = target["masks"].to(pred.device)
        if self.num_points > 0:
            coords = torch.rand(1, self.num_points, 2, device=pred.device)  # shared points
            pred_pts = point_sample(pred[:, None], coords.expand(pred.shape[0], -1, -1))[:, 0]
            tgt_pts = point_sample(tgt[:, None].float(), coords.expand(tgt.shape[0], -1, -1))[:, 0]
        else:
            pred_pts = pred.flatten(1)  # [Q,h*w]
            tgt_pts = resize_masks(tgt, tuple(pred.shape[-2:])).flatten(1)  # [N,h*w]
        if self.cost_mask:
            cost = cost + self.cost_mask * pairwise_sigmoid_bce(pred_pts, tgt_pts)
        if self.cost_dice:
            cost = cost + self.cost_dice * pairwise_dice(pred_pts, tgt_pts)
        return cost

    @torch.no_grad()
    def forward(
        self, pred_logits: Tensor, pred_masks: Tensor, targets: Sequence[Mapping]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match every image of a batch.

        Args:
            pred_logits: Tensor[B, Q, C+1].
            pred_masks: Tensor[B, Q, h, w] logits.
            targets: B dicts ``{"masks": bool Tensor[N_b, H, W], "classes": long Tensor[N_b]}``.

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 Tensor[min(Q, N_b)] (CPU).
        """
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{pred_logits.shape[0]} predictions but {len(targets)} targets")
        out = []
        for b, target in enumerate(targets):
            if target["classes"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            out.append(hungarian_match(self.cost_matrix(pred_logits[b], pred_masks[b], target)))
        return out
