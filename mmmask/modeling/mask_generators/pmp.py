"""PMP: Prompt-guided Mask Proposal generator.

A Mask2Former-style mask generator (pixel decoder + masked-attention query decoder) whose queries
also cross-attend to the text embeddings of the current vocabulary, so the proposals depend on
what the user asks for. Classes are cosine similarities to the same text embeddings, so any
vocabulary works at test time.

Build from a config (``MODEL.PMP.*``) with the backbone's feature shapes::

    gen = MASK_GENERATOR_REGISTRY.get("PMP")(
        cfg, input_shape=backbone.output_shape(), embed_dim=backbone.embed_dim
    )
    proposals = gen(features, text_emb)          # MaskProposals
    losses = gen.losses(proposals, [b["instances"] for b in batch], text_emb)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from ...config import configurable
from ...registry import MASK_GENERATOR_REGISTRY
from ..criterion import SetCriterion
from ..matcher import HungarianMatcher
from .pixel_decoder import FPNPixelDecoder
from .proposals import MaskProposals
from .query_decoder import QueryDecoder

__all__ = ["PMPMaskGenerator", "pad_target_masks"]


def pad_target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad ``masks`` (Tensor[N, H, W]) at the bottom/right to ``size`` = (H', W').

    Batched images are padded at the bottom/right to a common size; the predictions cover that
    padded area, so each image's target masks are padded the same way.
    """
    h, w = masks.shape[-2:]
    if h > size[0] or w > size[1]:
        raise ValueError(
            f"target masks of size {(h, w)} are larger than the area the predictions cover "
            f"{tuple(size)}; targets must be at the (padded) input image resolution"
        )
    if (h, w) == tuple(size):
        return masks
    out = masks.new_zeros((*masks.shape[:-2], *size))
    out[..., :h, :w] = masks
    return out


class PMPMaskGenerator(nn.Module):
    """Prompt-guided mask proposals (registered as ``"PMP"`` in MASK_GENERATOR_REGISTRY).

    Args:
        input_shape: backbone feature name -> ``(channels, stride)`` (extra names are ignored).
        embed_dim: D_emb, the width of the CLIP text embeddings.
        in_features: multi-scale features to use, e.g. ``("res2", "res3", "res4", "res5")``;
            None = every name starting with ``"res"``.
        num_queries, hidden_dim, mask_dim, nheads, dim_feedforward, dec_layers, pre_norm,
        dropout: query decoder sizes (see :class:`QueryDecoder`).
        pixel_decoder_convs: 3x3 conv blocks per FPN level.
        text_cross_attn: PMP's query-to-text cross-attention (False = plain Mask2Former decoder).
        logit_scale: initial temperature of the cosine class logits.
        deep_supervision: add the losses of every intermediate prediction.
        class_weight, mask_weight, dice_weight: loss (and matching cost) weights.
        no_object_weight: cross-entropy weight of the void class.
        train_num_points, oversample_ratio, importance_sample_ratio: point-sampled mask losses.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Mapping[str, Any],
        embed_dim: int,
        in_features: Sequence[str] | None = None,
        num_queries: int = 50,
        hidden_dim: int = 128,
        mask_dim: int = 128,
        nheads: int = 4,
        dim_feedforward: int = 512,
        dec_layers: int = 6,
        pre_norm: bool = False,
        dropout: float = 0.0,
        pixel_decoder_convs: int = 1,
        text_cross_attn: bool = True,
        logit_scale: float = 20.0,
        deep_supervision: bool = True,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        train_num_points: int = 3136,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if in_features is None:
            in_features = [name for name in input_shape if name.startswith("res")]
        self.embed_dim = int(embed_dim)
        self.deep_supervision = deep_supervision
        self.pixel_decoder = FPNPixelDecoder(
            input_shape=input_shape,
            in_features=in_features,
            conv_dim=hidden_dim,
            mask_dim=mask_dim,
            num_convs=pixel_decoder_convs,
            num_feature_levels=3,
        )
        self.query_decoder = QueryDecoder(
            hidden_dim=hidden_dim,
            num_queries=num_queries,
            nheads=nheads,
            dim_feedforward=dim_feedforward,
            dec_layers=dec_layers,
            mask_dim=mask_dim,
            embed_dim=embed_dim,
            num_feature_levels=self.pixel_decoder.num_feature_levels,
            pre_norm=pre_norm,
            dropout=dropout,
            text_cross_attn=text_cross_attn,
            logit_scale=logit_scale,
        )
        matcher = HungarianMatcher(
            cost_class=class_weight,
            cost_mask=mask_weight,
            cost_dice=dice_weight,
            num_points=train_num_points,
        )
        self.criterion = SetCriterion(
            matcher=matcher,
            weight_dict={
                "loss_ce": class_weight,
                "loss_mask": mask_weight,
                "loss_dice": dice_weight,
            },
            eos_coef=no_object_weight,
            losses=("labels", "masks"),
            num_points=train_num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Keyword arguments from ``MODEL.PMP.*`` (``input_shape`` and ``embed_dim`` come from
        the backbone and are passed next to ``cfg``)."""
        p = cfg.MODEL.PMP
        return {
            "in_features": list(cfg.MODEL.CLIP.FEATURES),
            "num_queries": p.NUM_QUERIES,
            "hidden_dim": p.HIDDEN_DIM,
            "mask_dim": p.MASK_DIM,
            "nheads": p.NHEADS,
            "dim_feedforward": p.DIM_FEEDFORWARD,
            "dec_layers": p.DEC_LAYERS,
            "pre_norm": p.PRE_NORM,
            "dropout": p.DROPOUT,
            "pixel_decoder_convs": p.PIXEL_DECODER_CONVS,
            "text_cross_attn": p.TEXT_CROSS_ATTN,
            "logit_scale": p.LOGIT_SCALE,
            "deep_supervision": p.DEEP_SUPERVISION,
            "class_weight": p.CLASS_WEIGHT,
            "mask_weight": p.MASK_WEIGHT,
            "dice_weight": p.DICE_WEIGHT,
            "no_object_weight": p.NO_OBJECT_WEIGHT,
            "train_num_points": p.TRAIN_NUM_POINTS,
            "oversample_ratio": p.OVERSAMPLE_RATIO,
            "importance_sample_ratio": p.IMPORTANCE_SAMPLE_RATIO,
        }

    @property
    def num_queries(self) -> int:
        return self.query_decoder.num_queries

    @property
    def mask_stride(self) -> int:
        """Stride of ``pred_masks`` relative to the input image (4 for res2)."""
        return self.pixel_decoder.mask_stride

    def _check_text(self, text_emb: Tensor) -> None:
        if text_emb.dim() != 2 or text_emb.shape[1] != self.embed_dim or text_emb.shape[0] < 1:
            raise ValueError(
                f"text_emb must be [C, {self.embed_dim}] with C >= 1; "
                f"got shape {tuple(text_emb.shape)}"
            )

    def forward(self, features: Mapping[str, Tensor], text_emb: Tensor) -> MaskProposals:
        """Propose masks for a vocabulary.

        Args:
            features: backbone features {"res2": [B,C2,H/4,W/4], ..., "res5": [B,C5,H/32,W/32]}
                (other entries are ignored).
            text_emb: Tensor[C, D_emb] L2-normalised class embeddings (C may change per call).

        Returns:
            :class:`MaskProposals` with pred_masks [B,Q,H/4,W/4], pred_logits [B,Q,C+1],
            query_embed [B,Q,D_emb] and one aux dict per intermediate prediction.
        """
        self._check_text(text_emb)
        mask_features, multi_scale = self.pixel_decoder(features)
        text_emb = text_emb.to(mask_features.dtype)
        preds = self.query_decoder(multi_scale, mask_features, text_emb)
        final = preds[-1]
        return MaskProposals(
            pred_masks=final["pred_masks"],
            pred_logits=final["pred_logits"],
            query_embed=final["query_embed"],
            aux=preds[:-1],
        )

    def losses(
        self, proposals: MaskProposals, targets: Sequence[Mapping], text_emb: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Weighted training losses (sum them for the total).

        Args:
            proposals: output of :meth:`forward` for the same batch.
            targets: the model input ``"instances"`` of each image: ``{"masks": bool
                Tensor[N, H, W], "classes": long Tensor[N]}`` at the (padded) image size, class
                ids indexing the vocabulary of ``text_emb``.
            text_emb: Tensor[C, D_emb] of the forward call (checked against the logits' C).

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice`` and, with deep supervision, the same with
            suffix ``_i`` for each intermediate prediction; already multiplied by their weights.
        """
        if text_emb is not None and text_emb.shape[0] != proposals.num_classes:
            raise ValueError(
                f"text_emb has {text_emb.shape[0]} classes but the proposals were computed for "
                f"{proposals.num_classes}; call losses with the vocabulary of forward"
            )
        h, w = proposals.pred_masks.shape[-2:]
        size = (h * self.mask_stride, w * self.mask_stride)
        prepared = []
        for t in targets:
            if "masks" not in t or "classes" not in t:
                raise KeyError(f"each target needs 'masks' and 'classes'; got keys {list(t)}")
            masks = t["masks"].to(proposals.pred_masks.device)
            prepared.append(
                {"masks": pad_target_masks(masks, size), "classes": t["classes"].to(masks.device)}
            )
        outputs = proposals.as_dict()
        if not self.deep_supervision:
            outputs["aux"] = []
        return self.criterion.weighted(self.criterion(outputs, prepared))


# Registered under the short config name used by MODEL.MASK_GENERATOR.NAME.
MASK_GENERATOR_REGISTRY._do_register("PMP", PMPMaskGenerator)
