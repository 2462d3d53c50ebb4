"""Point sampling of mask maps, used by the matcher and the set criterion.

Mask losses on a few thousand sampled points instead of every pixel cost far less memory and, with
uncertainty-driven sampling (points whose logits are near 0 are favoured), train as well as dense
losses (PointRend, Mask2Former). Coordinates are normalised to ``[0, 1]`` as ``(x, y)``, so the
same points can be read from a prediction and from a target of a different resolution that covers
the same image area.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "point_sample",
    "logit_uncertainty",
    "get_uncertain_point_coords_with_randomness",
    "resize_masks",
]


def point_sample(input: Tensor, point_coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly read ``input`` at normalised point coordinates.

    Args:
        input: Tensor[N, C, H, W] maps.
        point_coords: Tensor[N, P, 2] (or Tensor[N, Hp, Wp, 2]) ``(x, y)`` in ``[0, 1]``.
        align_corners: passed to ``grid_sample``; ``False`` treats pixels as areas.

    Returns:
        Tensor[N, C, P] (or Tensor[N, C, Hp, Wp]) values at the points.
    """
    if input.dim() != 4:
        raise ValueError(f"point_sample expects input [N,C,H,W]; got shape {tuple(input.shape)}")
    flat = point_coords.dim() == 3
    grid = 2.0 * point_coords.to(input.dtype) - 1.0  # [0,1] -> grid_sample's [-1,1]
    if flat:
        grid = grid.unsqueeze(2)  # [N,P,2] -> [N,P,1,2]
    out = F.grid_sample(input, grid, mode="bilinear", align_corners=align_corners)
    if flat:
        out = out.squeeze(3)  # [N,C,P,1] -> [N,C,P]
    return out


def logit_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of mask logits: ``-|logit|`` (highest where the prediction is closest to 0.5).

    Args:
        logits: Tensor[N, 1, P] (any shape works).
    """
    return -logits.abs()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose points where a mask prediction is uncertain, plus some uniformly random points.

    ``num_points * oversample_ratio`` candidates are drawn uniformly; the
    ``importance_sample_ratio * num_points`` most uncertain of them are kept and the rest of the
    ``num_points`` are fresh uniform draws (so confident regions are still seen now and then).

    Args:
        coarse_logits: Tensor[N, 1, H, W] mask logits.
        uncertainty_func: maps Tensor[N, 1, P] logits to Tensor[N, 1, P] uncertainty.
        num_points: points per mask (P).
        oversample_ratio: >= 1.
        importance_sample_ratio: in ``[0, 1]``.
        generator: optional random generator (reproducible sampling).

    Returns:
        Tensor[N, P, 2] point coordinates ``(x, y)`` in ``[0, 1]``.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1; got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1]; got {importance_sample_ratio}"
        )
    n = coarse_logits.shape[0]
    device, dtype = coarse_logits.device, coarse_logits.dtype
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_candidates, 2, device=device, dtype=dtype, generator=generator)
    scores = uncertainty_func(point_sample(coarse_logits, candidates))  # [N,1,S]
    num_uncertain = min(int(importance_sample_ratio * num_points), num_candidates)
    num_random = num_points - num_uncertain
    top = scores[:, 0, :].topk(num_uncertain, dim=1).indices  # [N,k]
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))  # [N,k,2]
    if num_random > 0:
        extra = torch.rand(n, num_random, 2, device=device, dtype=dtype, generator=generator)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-resize masks (bool or float) to ``size``; returns float Tensor[N, h, w] in [0, 1].

    Args:
        masks: Tensor[N, H, W].
        size: ``(h, w)``.
    """
    m = masks.float()
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if m.shape[0] == 0:
        return m.new_zeros((0, *size))
    return F.interpolate(m.unsqueeze(1), size=size, mode="area").squeeze(1)  # [N,1,h,w]->[N,h,w]
