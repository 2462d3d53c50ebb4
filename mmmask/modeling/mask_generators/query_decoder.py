"""PMP's query decoder: Mask2Former masked attention plus cross-attention to the vocabulary text.

Each decoder layer runs, in order:

1. masked cross-attention from the queries to one feature level (round robin over the levels,
   coarsest first); a query only sees the pixels where its previous mask prediction is > 0.5
   (a query whose mask is empty at that level sees every pixel);
2. PMP text cross-attention: the queries attend to the C text tokens of the current vocabulary
   (``text_emb`` projected to the hidden size), so the proposals follow the prompt; switched off
   with ``text_cross_attn=False`` (then no text parameters exist);
3. self-attention among the queries;
4. a feed-forward network.

A prediction head runs on the initial queries and after every layer: masks are the dot product
of an MLP embedding of each query with the per-pixel ``mask_features``; classes are
``logit_scale * cos(query embedding, text_emb)`` over the C classes plus the cosine with a learned
void embedding at index C.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pixel_decoder import sine_position_encoding

__all__ = ["QueryDecoder", "MLP"]

_MAX_LOGIT_SCALE = 100.0


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _Attention(nn.Module):
    """Residual multi-head attention with post- or pre-LayerNorm.

    Self-attention when ``memory`` is None (keys/values are the queries themselves).
    """

    def __init__(self, dim: int, nheads: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor | None = None,
        memory_pos: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt, query_pos: Tensor[B, Q, D]; memory, memory_pos: Tensor[B, S, D];
        attn_mask: bool Tensor[B*nheads, Q, S] (True = not attended)."""
        x = self.norm(tgt) if self.pre_norm else tgt
        if memory is None:
            key, value = x + query_pos, x
        else:
            key = memory if memory_pos is None else memory + memory_pos
            value = memory
        out = self.attn(x + query_pos, key, value, attn_mask=attn_mask, need_weights=False)[0]
        tgt = tgt + self.drop(out)
        return tgt if self.pre_norm else self.norm(tgt)


class _FFN(nn.Module):
    """Residual two-layer feed-forward network with post- or pre-LayerNorm."""

    def __init__(self, dim: int, hidden: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        tgt = tgt + self.drop(self.net(x))
        return tgt if self.pre_norm else self.norm(tgt)


class _DecoderLayer(nn.Module):
    def __init__(
        self, dim: int, nheads: int, ffn_dim: int, dropout: float, pre_norm: bool, text: bool
    ) -> None:
        super().__init__()
        self.cross_attn = _Attention(dim, nheads, dropout, pre_norm)
        self.text_attn = _Attention(dim, nheads, dropout, pre_norm) if text else None
        self.self_attn = _Attention(dim, nheads, dropout, pre_norm)
        self.ffn = _FFN(dim, ffn_dim, dropout, pre_norm)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        attn_mask: Tensor,
        text_tokens: Tensor | None,
    ) -> Tensor:
        tgt = self.cross_attn(tgt, query_pos, memory, memory_pos, attn_mask)
        if self.text_attn is not None and text_tokens is not None:
            tgt = self.text_attn(tgt, query_pos, text_tokens)
        tgt = self.self_attn(tgt, query_pos)
        return self.ffn(tgt)


class QueryDecoder(nn.Module):
    """Masked-attention query decoder with PMP text cross-attention.

    Args:
        hidden_dim: query / feature width D.
        num_queries: Q.
        nheads: attention heads.
        dim_feedforward: FFN hidden width.
        dec_layers: decoder layers L (L + 1 predictions: initial queries + each layer).
        mask_dim: channels of ``mask_features``.
        embed_dim: D_emb, the width of the CLIP text embeddings.
        num_feature_levels: feature levels attended round robin.
        pre_norm: LayerNorm before (True) or after (False) each residual block.
        dropout: attention / FFN dropout.
        text_cross_attn: PMP's query-to-text cross-attention in every layer.
        logit_scale: initial temperature of the cosine class logits (learned, capped at 100).
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        embed_dim: int,
        num_feature_levels: int = 3,
        pre_norm: bool = False,
        dropout: float = 0.0,
        text_cross_attn: bool = True,
        logit_scale: float = 20.0,
    ) -> None:
        super().__init__()
        if hidden_dim % nheads != 0:
            raise ValueError(f"hidden_dim {hidden_dim} must be divisible by nheads {nheads}")
        if dec_layers < 1 or num_feature_levels < 1:
            raise ValueError("dec_layers and num_feature_levels must be >= 1")
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0; got {logit_scale}")
        self.nheads = nheads
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.embed_dim = embed_dim
        self.text_cross_attn = text_cross_attn
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.text_proj = nn.Linear(embed_dim, hidden_dim) if text_cross_attn else None
        self.layers = nn.ModuleList(
            _DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, pre_norm, text_cross_attn)
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.class_embed = nn.Linear(hidden_dim, embed_dim)
        self.void_embed = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    def predict(
        self, output: Tensor, mask_features: Tensor, text_emb: Tensor, attn_size: tuple[int, int]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Prediction head.

        Args:
            output: Tensor[B, Q, D] queries.
            mask_features: Tensor[B, mask_dim, H, W].
            text_emb: Tensor[C, D_emb].
            attn_size: ``(h, w)`` of the level the next layer attends to.

        Returns:
            ``({"pred_logits": [B,Q,C+1], "pred_masks": [B,Q,H,W], "query_embed": [B,Q,D_emb]},
            attn_mask)`` with attn_mask bool Tensor[B*nheads, Q, h*w], True = not attended.
        """
        decoded = self.decoder_norm(output)
        query_embed = F.normalize(self.class_embed(decoded), dim=-1)  # [B,Q,D_emb]
        classifier = torch.cat(
            [F.normalize(text_emb, dim=-1), F.normalize(self.void_embed, dim=0)[None]]
        )  # [C+1,D_emb]
        scale = self.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)
        pred_logits = scale * query_embed @ classifier.T  # [B,Q,C+1]
        pred_masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        with torch.no_grad():
            small = F.interpolate(pred_masks, size=attn_size, mode="bilinear", align_corners=False)
            attn_mask = small.sigmoid().flatten(2) < 0.5  # [B,Q,h*w]
            attn_mask[attn_mask.all(-1)] = False  # an empty mask attends everywhere
            # one copy per head, the layout nn.MultiheadAttention expects: [B*nheads,Q,h*w]
            attn_mask = attn_mask.repeat_interleave(self.nheads, dim=0)
        preds = {"pred_logits": pred_logits, "pred_masks": pred_masks, "query_embed": query_embed}
        return preds, attn_mask

    def forward(
        self, multi_scale: list[Tensor], mask_features: Tensor, text_emb: Tensor
    ) -> list[dict[str, Tensor]]:
        """Decode.

        Args:
            multi_scale: ``num_feature_levels`` Tensor[B, D, h_l, w_l], coarsest first.
            mask_features: Tensor[B, mask_dim, H, W].
            text_emb: Tensor[C, D_emb] L2-normalised class embeddings.

        Returns:
            ``dec_layers + 1`` prediction dicts (see :meth:`predict`), first to last.
        """
        if len(multi_scale) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels; got {len(multi_scale)}"
            )
        b = mask_features.shape[0]
        memories, memory_pos, sizes = [], [], []
        for lvl, feat in enumerate(multi_scale):
            h, w = feat.shape[-2:]
            sizes.append((h, w))
            pos = sine_position_encoding(
                b, h, w, feat.shape[1], device=feat.device, dtype=feat.dtype
            )
            memory_pos.append(pos.flatten(2).transpose(1, 2))  # [B,D,h,w] -> [B,h*w,D]
            memories.append(feat.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl])
        query_pos = self.query_pos.weight.unsqueeze(0).expand(b, -1, -1)  # [B,Q,D]
        output = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)  # [B,Q,D]
        text_tokens = None
        if self.text_proj is not None:
            text_tokens = self.text_proj(text_emb).unsqueeze(0).expand(b, -1, -1)  # [B,C,D]

        preds, attn_mask = self.predict(output, mask_features, text_emb, sizes[0])
        all_preds = [preds]
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_feature_levels
            output = layer(
                output, query_pos, memories[lvl], memory_pos[lvl], attn_mask, text_tokens
            )
            next_size = sizes[(i + 1) % self.num_feature_levels]
            preds, attn_mask = self.predict(output, mask_features, text_emb, next_size)
            all_preds.append(preds)
        return all_preds
