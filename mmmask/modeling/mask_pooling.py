"""Mask pooling: the baseline mask classifier, and what every mask classifier shares.

A mask is named by averaging CLIP's dense features inside it, mapping the average through CLIP's
own head (``backbone.dense_to_embedding``) and comparing it with the text embeddings of the
vocabulary: ``logits = logit_scale * cos(embedding, text_emb)`` over C classes, plus a learned
void logit at index C.

Shared here: :class:`ClassifierOutput`, :func:`cosine_logits` and :func:`classifier_losses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import configurable
from ..registry import MASK_CLASSIFIER_REGISTRY
from .iou_matching import consistency_loss

__all__ = [
    "ClassifierOutput",
    "DenseHead",
    "MaskPooling",
    "check_classifier_inputs",
    "classifier_losses",
    "cosine_logits",
    "masked_average",
]

# The learned logit scale never exceeds this (CLIP's clamp).
MAX_LOGIT_SCALE = 100.0


class DenseHead(Protocol):
    """What a classifier needs of the backbone: CLIP's head for pooled dense features."""

    def dense_to_embedding(self, x: Tensor) -> Tensor:  # [..., D_dense] -> [..., D_emb]
        ...


@dataclass
class ClassifierOutput:
    """What a mask classifier returns.

    Attributes:
        logits: [B, Q, C+1] class logits; index C is void / no object.
        embeddings: [B, Q, D_emb] L2-normalised mask embeddings.
        activation_maps: [B, Q, K, h, w] semantic activation maps (Mask-Adapter only; spatial
            softmax weights, each map sums to 1), None for mask pooling.
    """

    logits: Tensor
    embeddings: Tensor
    activation_maps: Tensor | None = None


def check_classifier_inputs(dense: Tensor, masks: Tensor, text_emb: Tensor, dense_dim: int) -> None:
    """Raise ValueError when the shapes of a classifier's inputs do not fit together."""
    if dense.dim() != 4 or dense.shape[1] != dense_dim:
        raise ValueError(f"dense must be [B, {dense_dim}, h, w]; got {tuple(dense.shape)}")
    if masks.dim() != 4 or masks.shape[0] != dense.shape[0]:
        raise ValueError(
            f"masks must be [B, Q, H, W] with B = {dense.shape[0]}; got {tuple(masks.shape)}"
        )
    if text_emb.dim() != 2:
        raise ValueError(f"text_emb must be [C, D_emb]; got {tuple(text_emb.shape)}")


def cosine_logits(
    embeddings: Tensor, text_emb: Tensor, logit_scale: Tensor, void_logit: Tensor
) -> Tensor:
    """``scale * cos`` with every class, plus the void logit.

    Args:
        embeddings: [B, Q, D] L2-normalised; text_emb: [C, D] L2-normalised.
        logit_scale: scalar (already exponentiated); void_logit: [B, Q] or scalar.

    Returns:
        [B, Q, C+1] logits.
    """
    cls = logit_scale * embeddings @ text_emb.to(embeddings.dtype).t()  # [B, Q, C]
    void = void_logit.expand(cls.shape[:2]).to(cls.dtype)[..., None]  # [B, Q, 1]
    return torch.cat([cls, void], dim=-1)


def masked_average(dense: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Average of the dense features weighted by each mask.

    Args:
        dense: [B, D, h, w]; masks: [B, Q, H, W] in [0, 1] (resized bilinearly to h x w).

    Returns:
        [B, Q, D] pooled features: sum(mask * feat) / (sum(mask) + eps).
    """
    h, w = dense.shape[-2:]
    masks = masks.to(dense.dtype)
    if masks.shape[1] == 0:
        return dense.new_zeros(dense.shape[0], 0, dense.shape[1])
    if tuple(masks.shape[-2:]) != (h, w):
        masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
    weights = masks.flatten(2)  # [B, Q, hw]
    pooled = torch.einsum("bqp,bdp->bqd", weights, dense.flatten(2))  # [B, Q, D]
    return pooled / (weights.sum(-1, keepdim=True) + eps)


def classifier_losses(
    output: ClassifierOutput,
    targets_classes: Tensor,
    consistency_groups: Tensor | None,
    *,
    class_weight: float = 1.0,
    consistency_weight: float = 1.0,
    void_weight: float = 1.0,
    prefix: str = "adapter",
) -> dict[str, Tensor]:
    """Cross-entropy over C+1 classes and the mask consistency loss, weighted.

    Args:
        output: a classifier's output for [B, Q] masks.
        targets_classes: LongTensor [B, Q]; class index per mask, C = void, -1 = ignore.
        consistency_groups: LongTensor [B, Q] group ids (-1 = none) or None (no consistency loss).
        class_weight, consistency_weight: factors of the two losses.
        void_weight: weight of the void class inside the cross-entropy.

    Returns:
        {"loss_<prefix>_ce": scalar, "loss_consistency": scalar}.
    """
    logits = output.logits
    if targets_classes.shape != logits.shape[:2]:
        raise ValueError(
            f"targets_classes {tuple(targets_classes.shape)} must match logits "
            f"{tuple(logits.shape)}[:2]"
        )
    num_classes = logits.shape[-1] - 1
    targets = targets_classes.to(logits.device).long()
    if bool((targets > num_classes).any()) or bool((targets < -1).any()):
        raise ValueError(f"targets_classes must be in [-1, {num_classes}] (C = void, -1 = ignore)")
    weight = torch.ones(num_classes + 1, device=logits.device, dtype=logits.dtype)
    weight[num_classes] = void_weight
    if bool((targets >= 0).any()):
        ce = F.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), weight=weight.float(), ignore_index=-1
        )
    else:
        ce = logits.sum() * 0.0
    if consistency_groups is None:
        cons = output.embeddings.sum() * 0.0
    else:
        cons = consistency_loss(output.embeddings, consistency_groups)
    return {f"loss_{prefix}_ce": class_weight * ce, "loss_consistency": consistency_weight * cons}


@MASK_CLASSIFIER_REGISTRY.register()
class MaskPooling(nn.Module):
    """Baseline classifier: masked average of CLIP dense features -> CLIP head -> cosine.

    Its only parameters are the logit scale and the void logit.
    """

    @configurable
    def __init__(
        self,
        *,
        dense_dim: int,
        embed_dim: int,
        logit_scale: float = 50.0,
        void_logit: float = 0.0,
        class_weight: float = 1.0,
        consistency_weight: float = 1.0,
        void_weight: float = 0.1,
    ) -> None:
        """
        Args:
            dense_dim: channels D_dense of CLIP's dense map; embed_dim: D_emb of the text space.
            logit_scale: initial temperature of the cosine logits (learned, log-parametrised).
            void_logit: initial value of the learned void logit.
            class_weight, consistency_weight, void_weight: loss weights (see ``losses``).
        """
        super().__init__()
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0; got {logit_scale}")
        self.dense_dim = dense_dim
        self.embed_dim = embed_dim
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.void_logit = nn.Parameter(torch.tensor(float(void_logit)))
        self.class_weight = class_weight
        self.consistency_weight = consistency_weight
        self.void_weight = void_weight

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Everything but ``dense_dim``/``embed_dim``, which the backbone passes."""
        ma = cfg.MODEL.MASK_ADAPTER
        return {
            "logit_scale": ma.LOGIT_SCALE,
            "class_weight": ma.CLASS_WEIGHT,
            "consistency_weight": ma.CONSISTENCY_WEIGHT,
            "void_weight": ma.VOID_WEIGHT,
        }

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self, dense: Tensor, masks: Tensor, text_emb: Tensor, backbone: DenseHead
    ) -> ClassifierOutput:
        """Name every mask.

        Args:
            dense: [B, D_dense, h, w] CLIP dense features.
            masks: [B, Q, H', W'] mask probabilities in [0, 1], any resolution.
            text_emb: [C, D_emb] L2-normalised text embeddings of the vocabulary.
            backbone: provides ``dense_to_embedding`` ([..., D_dense] -> [..., D_emb]).

        Returns:
            ClassifierOutput with logits [B, Q, C+1] and embeddings [B, Q, D_emb].
        """
        check_classifier_inputs(dense, masks, text_emb, self.dense_dim)
        pooled = masked_average(dense, masks)  # [B, Q, D_dense]
        emb = F.normalize(backbone.dense_to_embedding(pooled), dim=-1)  # [B, Q, D_emb]
        logits = cosine_logits(emb, text_emb, self.logit_scale, self.void_logit)
        return ClassifierOutput(logits=logits, embeddings=emb)

    def losses(
        self,
        output: ClassifierOutput,
        targets_classes: Tensor,
        consistency_groups: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss_pooling_ce", "loss_consistency"}`` (see :func:`classifier_losses`)."""
        return classifier_losses(
            output,
            targets_classes,
            consistency_groups,
            class_weight=self.class_weight,
            consistency_weight=self.consistency_weight,
            void_weight=self.void_weight,
            prefix="pooling",
        )
