"""Mask-Adapter: semantic activation maps instead of raw masks for pooling CLIP features.

For every proposal mask, a small conv network looks at the mask together with CLIP's dense
features and produces K *semantic activation maps*. Each map, softmax-normalised over space,
weights the dense features; the K pooled vectors go through CLIP's head, are normalised and
averaged into the mask embedding, which is compared with the text embeddings.

    mask [H', W'] --resize--> [h*s, w*s] --stem (stride-2 convs)--> [hidden, h, w] --+
    dense [D_dense, h, w] --1x1 conv--> [hidden, h, w] --------------------------(add)
      --> ConvNeXt blocks --> 1x1 conv --> K maps [K, h, w] --softmax over h*w--> pool dense
      --> dense_to_embedding --> normalise --> mean over K --> normalise --> cosine logits

All masks of all images run through the conv blocks as one batch of B*Q, in chunks of at most
``chunk_size`` masks to bound memory. Training adds the mask consistency loss
(:mod:`mmmask.modeling.iou_matching`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import configurable
from ..registry import MASK_CLASSIFIER_REGISTRY
from .iou_matching import TRAIN_MASK_MODES
from .mask_pooling import (
    MAX_LOGIT_SCALE,
    ClassifierOutput,
    DenseHead,
    check_classifier_inputs,
    classifier_losses,
    cosine_logits,
)

__all__ = ["ConvNeXtBlock", "LayerNorm2d", "MaskAdapter"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a [N, C, H, W] map."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # [N, H, W, C]
        x = super().forward(x)
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, MLP (4x, GELU), residual."""

    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [N, H, W, C]
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)  # [N, C, H, W]


def _mask_stem(hidden_dim: int, downsample: int) -> nn.Sequential:
    """log2(downsample) stride-2 convs taking a [N, 1, h*s, w*s] mask to [N, hidden, h, w]."""
    steps = int(round(math.log2(downsample)))
    if downsample < 1 or 2**steps != downsample:
        raise ValueError(f"mask_downsample must be a power of two (1, 2, 4, 8); got {downsample}")
    if steps == 0:
        return nn.Sequential(nn.Conv2d(1, hidden_dim, kernel_size=3, padding=1))
    layers: list[nn.Module] = []
    channels = [1] + [max(hidden_dim // 2 ** (steps - 1 - i), 8) for i in range(steps)]
    channels[-1] = hidden_dim
    for i in range(steps):
        layers.append(nn.Conv2d(channels[i], channels[i + 1], kernel_size=2, stride=2))
        if i < steps - 1:
            layers += [LayerNorm2d(channels[i + 1]), nn.GELU()]
    return nn.Sequential(*layers)


@MASK_CLASSIFIER_REGISTRY.register()
class MaskAdapter(nn.Module):
    """Mask classifier through K semantic activation maps per mask (Mask-Adapter)."""

    @configurable
    def __init__(
        self,
        *,
        dense_dim: int,
        embed_dim: int,
        hidden_dim: int = 128,
        num_blocks: int = 2,
        num_maps: int = 8,
        mask_downsample: int = 4,
        logit_scale: float = 50.0,
        chunk_size: int = 64,
        class_weight: float = 1.0,
        consistency_weight: float = 1.0,
        void_weight: float = 0.1,
        iou_threshold: float = 0.7,
        train_masks: str = "gt",
        num_pred_masks: int = 16,
        unmatched_as_void: bool = True,
    ) -> None:
        """
        Args:
            dense_dim: channels D_dense of CLIP's dense map; embed_dim: D_emb of the text space.
            hidden_dim: channels of the conv blocks; num_blocks: ConvNeXt blocks.
            num_maps: K semantic activation maps per mask.
            mask_downsample: masks enter the stem at the dense map size times this (power of 2).
            logit_scale: initial temperature of the cosine logits (learned).
            chunk_size: most masks per pass through the conv blocks; 0 = all at once.
            class_weight, consistency_weight, void_weight: loss weights (see ``losses``).
            iou_threshold, train_masks, num_pred_masks, unmatched_as_void: how the training
                masks are chosen (read by the caller, passed to ``build_adapter_targets``).
        """
        super().__init__()
        if train_masks not in TRAIN_MASK_MODES:
            raise ValueError(f"Unknown train_masks {train_masks!r}; valid: {TRAIN_MASK_MODES}")
        if logit_scale <= 0 or num_maps < 1 or num_blocks < 0 or chunk_size < 0:
            raise ValueError(
                "MaskAdapter needs logit_scale > 0, num_maps >= 1, num_blocks >= 0 and "
                f"chunk_size >= 0; got {logit_scale}, {num_maps}, {num_blocks}, {chunk_size}"
            )
        self.dense_dim = dense_dim
        self.embed_dim = embed_dim
        self.num_maps = num_maps
        self.mask_downsample = mask_downsample
        self.chunk_size = chunk_size
        self.class_weight = class_weight
        self.consistency_weight = consistency_weight
        self.void_weight = void_weight
        self.iou_threshold = iou_threshold
        self.train_masks = train_masks
        self.num_pred_masks = num_pred_masks
        self.unmatched_as_void = unmatched_as_void

        self.mask_stem = _mask_stem(hidden_dim, mask_downsample)
        self.dense_proj = nn.Conv2d(dense_dim, hidden_dim, kernel_size=1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(hidden_dim) for _ in range(num_blocks)])
        self.out_norm = LayerNorm2d(hidden_dim)
        self.to_maps = nn.Conv2d(hidden_dim, num_maps, kernel_size=1)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.void_embedding = nn.Parameter(F.normalize(torch.randn(embed_dim), dim=0))

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Everything but ``dense_dim``/``embed_dim``, which the backbone passes."""
        ma = cfg.MODEL.MASK_ADAPTER
        return {
            "hidden_dim": ma.HIDDEN_DIM,
            "num_blocks": ma.NUM_BLOCKS,
            "num_maps": ma.NUM_MAPS,
            "mask_downsample": ma.MASK_DOWNSAMPLE,
            "logit_scale": ma.LOGIT_SCALE,
            "chunk_size": ma.CHUNK_SIZE,
            "class_weight": ma.CLASS_WEIGHT,
            "consistency_weight": ma.CONSISTENCY_WEIGHT,
            "void_weight": ma.VOID_WEIGHT,
            "iou_threshold": ma.IOU_THRESHOLD,
            "train_masks": ma.TRAIN_MASKS,
            "num_pred_masks": ma.NUM_PRED_MASKS,
            "unmatched_as_void": ma.UNMATCHED_AS_VOID,
        }

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def activation_map_logits(self, dense: Tensor, masks: Tensor) -> Tensor:
        """Unnormalised semantic activation maps.

        Args:
            dense: [B, D_dense, h, w]; masks: [B, Q, H', W'] probabilities.

        Returns:
            [B, Q, K, h, w] map logits.
        """
        b, q = masks.shape[:2]
        h, w = dense.shape[-2:]
        s = self.mask_downsample
        proj = self.dense_proj(dense)  # [B, hidden, h, w]
        flat = masks.to(dense.dtype).reshape(b * q, 1, *masks.shape[-2:])  # [N, 1, H', W']
        image_of = torch.arange(b, device=dense.device).repeat_interleave(q)  # [N]
        chunk = self.chunk_size if self.chunk_size > 0 else max(b * q, 1)
        maps = []
        for start in range(0, b * q, chunk):
            m = flat[start : start + chunk]
            if tuple(m.shape[-2:]) != (h * s, w * s):
                m = F.interpolate(m, size=(h * s, w * s), mode="bilinear", align_corners=False)
            x = self.mask_stem(m)  # [n, hidden, h, w]
            x = x + proj[image_of[start : start + chunk]]
            x = self.to_maps(self.out_norm(self.blocks(x)))  # [n, K, h, w]
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            maps.append(x)
        if not maps:
            return dense.new_zeros(b, q, self.num_maps, h, w)
        return torch.cat(maps).reshape(b, q, self.num_maps, h, w)

    def forward(
        self, dense: Tensor, masks: Tensor, text_emb: Tensor, backbone: DenseHead
    ) -> ClassifierOutput:
        """Name every mask.

        Args:
            dense: [B, D_dense, h, w] CLIP dense features (ConvNeXt stage or ViT patch grid).
            masks: [B, Q, H', W'] mask probabilities in [0, 1], any resolution.
            text_emb: [C, D_emb] L2-normalised text embeddings of the vocabulary.
            backbone: provides ``dense_to_embedding`` ([..., D_dense] -> [..., D_emb]).

        Returns:
            ClassifierOutput: logits [B, Q, C+1], embeddings [B, Q, D_emb], activation_maps
            [B, Q, K, h, w] (spatial softmax weights).
        """
        check_classifier_inputs(dense, masks, text_emb, self.dense_dim)
        b, q = masks.shape[:2]
        h, w = dense.shape[-2:]
        k = self.num_maps
        map_logits = self.activation_map_logits(dense, masks)  # [B, Q, K, h, w]
        weights = map_logits.reshape(b, q, k, h * w).softmax(dim=-1)  # [B, Q, K, hw]
        pooled = torch.einsum("bqkp,bdp->bqkd", weights, dense.flatten(2))  # [B, Q, K, D_dense]
        per_map = F.normalize(backbone.dense_to_embedding(pooled), dim=-1)  # [B, Q, K, D_emb]
        emb = F.normalize(per_map.mean(dim=2), dim=-1)  # [B, Q, D_emb]
        void = emb @ F.normalize(self.void_embedding, dim=0).to(emb.dtype)  # [B, Q]
        logits = cosine_logits(emb, text_emb, self.logit_scale, self.logit_scale * void)
        return ClassifierOutput(
            logits=logits, embeddings=emb, activation_maps=weights.reshape(b, q, k, h, w)
        )

    def losses(
        self,
        output: ClassifierOutput,
        targets_classes: Tensor,
        consistency_groups: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Training losses of the adapter.

        Args:
            output: ``forward``'s output for [B, Q] masks.
            targets_classes: LongTensor [B, Q]; class per mask, C = void, -1 = ignore.
            consistency_groups: LongTensor [B, Q]; masks with one id in one image (the GT
                object they match by IoU) form a group, -1 = none; None = no consistency loss.

        Returns:
            {"loss_adapter_ce": weighted CE over C+1 classes (void weighted by void_weight),
             "loss_consistency": weighted mean over groups of 2+ members of 1 - cos(embedding,
             group mean); 0 when no such group}.
        """
        return classifier_losses(
            output,
            targets_classes,
            consistency_groups,
            class_weight=self.class_weight,
            consistency_weight=self.consistency_weight,
            void_weight=self.void_weight,
            prefix="adapter",
        )
