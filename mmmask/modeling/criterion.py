"""Set criterion of query-based mask prediction (Mask2Former-style).

Queries are matched one-to-one to targets (:class:`~mmmask.modeling.matcher.HungarianMatcher`);
matched queries learn their target's class and mask, unmatched ones learn the void class (index C,
down-weighted by ``eos_coef``). The number of classes C is read from the logits of each call, so
the vocabulary can change from batch to batch.

Losses (unweighted; ``weight_dict`` says how to combine them):

- ``loss_ce``: cross-entropy over C+1 classes.
- ``loss_mask``: sigmoid BCE of matched masks on uncertainty-sampled points.
- ``loss_dice``: dice loss of matched masks on the same points.

Mask losses are summed over matched masks and divided by the number of target masks in the batch
(averaged over processes when ``torch.distributed`` is initialised). Auxiliary predictions of the
decoder layers give the same losses with suffix ``_i`` (deep supervision).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher
from .point_sample import (
    get_uncertain_point_coords_with_randomness,
    logit_uncertainty,
    point_sample,
    resize_masks,
)

__all__ = ["SetCriterion", "num_masks_across_processes", "sigmoid_bce_loss", "dice_loss"]

_VALID_LOSSES = ("labels", "masks")


def num_masks_across_processes(targets: Sequence[Mapping], device: torch.device) -> float:
    """Mean over processes of the number of target masks in the local batch, at least 1."""
    n = torch.as_tensor(
        float(sum(len(t["classes"]) for t in targets)), dtype=torch.float32, device=device
    )
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return max(float(n.item()), 1.0)


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Point-mean sigmoid BCE summed over masks, divided by ``num_masks``.

    Args:
        logits: Tensor[K, P]; targets: Tensor[K, P] in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss summed over masks, divided by ``num_masks``.

    Args:
        logits: Tensor[K, P]; targets: Tensor[K, P] in [0, 1].
    """
    probs = logits.sigmoid()
    inter = 2.0 * (probs * targets).sum(-1)
    total = probs.sum(-1) + targets.sum(-1)
    return (1.0 - (inter + 1.0) / (total + 1.0)).sum() / num_masks


def _as_outputs(outputs: Any) -> Mapping:
    """Accept a ``MaskProposals`` (attribute access) or a mapping with the same keys."""
    if isinstance(outputs, Mapping):
        return outputs
    return {
        "pred_logits": outputs.pred_logits,
        "pred_masks": outputs.pred_masks,
        "aux": list(getattr(outputs, "aux", []) or []),
    }


class SetCriterion(nn.Module):
    """Hungarian-matched class and mask losses; the class count C may change between calls.

    Args:
        matcher: assigns queries to targets.
        weight_dict: loss name -> weight (e.g. ``{"loss_ce": 2, "loss_mask": 5, "loss_dice": 5}``);
            used by :meth:`weighted`.
        eos_coef: weight of the void class in the cross-entropy.
        losses: subset of ``("labels", "masks")``.
        num_points: points per mask for the mask losses; 0 = every pixel of the prediction grid.
        oversample_ratio: candidate points per kept point for uncertainty sampling (>= 1).
        importance_sample_ratio: share of the points chosen by uncertainty (rest uniform).
    """

    def __init__(
        self,
        *,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        eos_coef: float = 0.1,
        losses: Sequence[str] = _VALID_LOSSES,
        num_points: int = 0,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        bad = [name for name in losses if name not in _VALID_LOSSES]
        if bad:
            raise ValueError(f"Unknown losses {bad}; valid: {list(_VALID_LOSSES)}")
        if num_points < 0:
            raise ValueError(f"num_points must be >= 0; got {num_points}")
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = float(eos_coef)
        self.losses = tuple(losses)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)

    # -- single losses ------------------------------------------------------------------------
    def loss_labels(
        self, pred_logits: Tensor, targets: Sequence[Mapping], indices: list[tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        """Cross-entropy over C+1 classes; unmatched queries target the void class C.

        Args:
            pred_logits: Tensor[B, Q, C+1].
        """
        b, q, k = pred_logits.shape
        void = k - 1
        target_classes = torch.full((b, q), void, dtype=torch.long, device=pred_logits.device)
        for i, (src, tgt) in enumerate(indices):
            if src.numel():
                cls = targets[i]["classes"].to(pred_logits.device).long()
                target_classes[i, src.to(pred_logits.device)] = cls[tgt.to(cls.device)]
        class_weight = torch.ones(k, dtype=pred_logits.dtype, device=pred_logits.device)
        class_weight[void] = self.eos_coef
        # cross_entropy wants the class dim second: [B,Q,C+1] -> [B,C+1,Q]
        loss = F.cross_entropy(pred_logits.transpose(1, 2), target_classes, class_weight)
        return {"loss_ce": loss}

    def loss_masks(
        self,
        pred_masks: Tensor,
        targets: Sequence[Mapping],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
    ) -> dict[str, Tensor]:
        """Sigmoid BCE and dice of matched masks (point-sampled when ``num_points > 0``).

        Args:
            pred_masks: Tensor[B, Q, h, w] logits; target masks may have any resolution that
                covers the same image area (points are in normalised coordinates).
        """
        src_list, tgt_list = [], []
        for i, (src, tgt) in enumerate(indices):
            if src.numel():
                src_list.append(pred_masks[i, src.to(pred_masks.device)])  # [k_i,h,w]
                tgt_list.append(targets[i]["masks"][tgt.to(targets[i]["masks"].device)])
        if not src_list:  # no targets in the batch: zero losses that keep the graph connected
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src_masks = torch.cat(src_list).float()  # [K,h,w]
        if self.num_points == 0:
            size = tuple(src_masks.shape[-2:])
            point_logits = src_masks.flatten(1)  # [K,h*w]
            point_labels = torch.cat([resize_masks(t.to(src_masks.device), size) for t in tgt_list])
            point_labels = point_labels.flatten(1)
        else:
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src_masks[:, None],
                    logit_uncertainty,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )  # [K,P,2]
                labels, start = [], 0
                for t in tgt_list:  # per image: target resolutions may differ
                    c = coords[start : start + len(t)]
                    labels.append(point_sample(t[:, None].to(coords).float(), c)[:, 0])
                    start += len(t)
                point_labels = torch.cat(labels)  # [K,P]
            point_logits = point_sample(src_masks[:, None], coords)[:, 0]  # [K,P]
        return {
            "loss_mask": sigmoid_bce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    # -- all losses ---------------------------------------------------------------------------
    def _losses_of(
        self, pred_logits: Tensor, pred_masks: Tensor, targets: Sequence[Mapping], num_masks: float
    ) -> dict[str, Tensor]:
        indices = self.matcher(pred_logits, pred_masks, targets)
        out: dict[str, Tensor] = {}
        if "labels" in self.losses:
            out.update(self.loss_labels(pred_logits, targets, indices))
        if "masks" in self.losses:
            out.update(self.loss_masks(pred_masks, targets, indices, num_masks))
        return out

    def forward(self, outputs: Any, targets: Sequence[Mapping]) -> dict[str, Tensor]:
        """Unweighted losses of the final and (with suffix ``_i``) every auxiliary prediction.

        Args:
            outputs: a ``MaskProposals`` or a mapping ``{"pred_logits": Tensor[B,Q,C+1],
                "pred_masks": Tensor[B,Q,h,w], "aux": [same keys per decoder layer]}``.
            targets: B dicts ``{"masks": bool Tensor[N_b, H, W], "classes": long Tensor[N_b]}``.
        """
        outs = _as_outputs(outputs)
        num_masks = num_masks_across_processes(targets, outs["pred_logits"].device)
        losses = self._losses_of(outs["pred_logits"], outs["pred_masks"], targets, num_masks)
        for i, aux in enumerate(outs.get("aux", []) or []):
            aux_losses = self._losses_of(aux["pred_logits"], aux["pred_masks"], targets, num_masks)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def weighted(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Multiply each loss by its ``weight_dict`` weight (suffix ``_i`` ignored for lookup);
        losses without a weight are dropped."""
        out = {}
        for name, value in losses.items():
            base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
            if base in self.weight_dict:
                out[name] = value * self.weight_dict[base]
        return out
