"""A light FPN pixel decoder for PMP, and the sine positional encoding of feature maps.

Mask2Former's pixel decoder is a multi-scale deformable-attention encoder (MSDeformAttn, a CUDA
kernel). This one is a plain conv FPN: a 1x1 lateral conv per level, a top-down pathway with
upsampling and addition, and 3x3 conv + GroupNorm + ReLU after each merge. It runs anywhere (CPU
included) and keeps the decoder's interface: per-pixel ``mask_features`` at the finest level and
the three coarsest levels for the masked-attention query decoder (which adds the positional
encodings and level embeddings).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPNPixelDecoder", "sine_position_encoding", "shape_of", "group_norm"]


def shape_of(spec: Any) -> tuple[int, int]:
    """``(channels, stride)`` of an ``input_shape`` entry: a pair or an object with
    ``.channels`` and ``.stride`` attributes."""
    if hasattr(spec, "channels") and hasattr(spec, "stride"):
        return int(spec.channels), int(spec.stride)
    channels, stride = spec
    return int(channels), int(stride)


def group_norm(channels: int, max_groups: int = 32, min_group_size: int = 4) -> nn.GroupNorm:
    """GroupNorm with the most groups (<= ``max_groups``) that divide ``channels`` into groups
    of >= ``min_group_size`` channels (one-channel groups would zero out a 1x1 feature map)."""
    groups = max(
        [
            g
            for g in range(1, max_groups + 1)
            if channels % g == 0 and channels // g >= min_group_size
        ]
        or [1]
    )
    return nn.GroupNorm(groups, channels)


def sine_position_encoding(
    batch: int,
    height: int,
    width: int,
    dim: int,
    *,
    temperature: float = 10000.0,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """2-D sine/cosine positional encoding (DETR style) with coordinates normalised to [0, 2pi].

    The first ``dim/2`` channels encode y, the last ``dim/2`` encode x; within each half,
    even channels are sines and odd channels cosines of geometric frequencies.

    Returns:
        Tensor[batch, dim, height, width].
    """
    if dim % 4 != 0:
        raise ValueError(f"positional encoding dim must be a multiple of 4; got {dim}")
    half = dim // 2
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    idx = torch.arange(half, device=device, dtype=torch.float32)
    freqs = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)  # [half]

    def encode(coords: Tensor) -> Tensor:  # [n] -> [n, half]
        angles = coords[:, None] / freqs[None, :]
        out = torch.empty_like(angles)
        out[:, 0::2] = angles[:, 0::2].sin()
        out[:, 1::2] = angles[:, 1::2].cos()
        return out

    pos_y = encode(ys)[:, None, :].expand(height, width, half)  # [h,w,half]
    pos_x = encode(xs)[None, :, :].expand(height, width, half)  # [h,w,half]
    pos = torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1)  # [h,w,dim] -> [dim,h,w]
    return pos.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1)


def _conv_block(in_ch: int, out_ch: int, kernel: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        group_norm(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FPNPixelDecoder(nn.Module):
    """Top-down FPN over the backbone's multi-scale features.

    Args:
        input_shape: feature name -> ``(channels, stride)`` for the features in ``in_features``.
        in_features: at least two feature names; ordered by stride internally.
        conv_dim: channels of every FPN level (= the query decoder's hidden size).
        mask_dim: channels of ``mask_features``.
        num_convs: 3x3 conv blocks after each top-down merge.
        num_feature_levels: coarsest levels handed to the query decoder (<= levels - 1).
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, Any],
        in_features: Sequence[str],
        conv_dim: int,
        mask_dim: int,
        num_convs: int = 1,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise KeyError(f"Features {missing} not in input_shape; available: {list(input_shape)}")
        if len(in_features) < 2:
            raise ValueError(f"The pixel decoder needs >= 2 feature levels; got {in_features}")
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1; got {num_convs}")
        shapes = {f: shape_of(input_shape[f]) for f in in_features}
        self.in_features = sorted(in_features, key=lambda f: shapes[f][1])  # finest first
        self.mask_stride = shapes[self.in_features[0]][1]
        self.num_feature_levels = min(num_feature_levels, len(self.in_features) - 1)
        self.lateral = nn.ModuleList(
            [_conv_block(shapes[f][0], conv_dim, 1, relu=False) for f in self.in_features]
        )
        self.output = nn.ModuleList(
            [
                nn.Sequential(
                    *[_conv_block(conv_dim, conv_dim, 3, relu=True) for _ in range(num_convs)]
                )
                for _ in self.in_features
            ]
        )
        self.mask_proj = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)

    def forward(self, features: Mapping[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Run the FPN.

        Args:
            features: name -> Tensor[B, C_i, H/s_i, W/s_i] (at least ``in_features``).

        Returns:
            ``(mask_features, multi_scale)``: Tensor[B, mask_dim, H/s_0, W/s_0] at the finest
            stride, and ``num_feature_levels`` Tensor[B, conv_dim, h_l, w_l] ordered coarsest
            first (res5, res4, res3 for a four-level backbone).
        """
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"Features {missing} missing; got {list(features)}")
        outs: list[Tensor] = []  # coarsest first
        y: Tensor | None = None
        for i in reversed(range(len(self.in_features))):
            x = self.lateral[i](features[self.in_features[i]])
            if y is not None:
                x = x + F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            y = self.output[i](x)
            outs.append(y)
        mask_features = self.mask_proj(outs[-1])
        return mask_features, outs[: self.num_feature_levels]
