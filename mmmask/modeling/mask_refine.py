"""Edge-aware refinement of coarse mask probabilities, with the image as the guide.

Query decoders predict masks at a quarter of the image's resolution, and bilinear upsampling puts
their outlines between the object's edges. The guided filter (He, Sun and Tang, "Guided Image
Filtering", ECCV 2010) makes the filtered mask, in every window, a linear function of the image's
colours: where the image is flat the mask is smoothed, across a colour edge the mask's step is
moved onto the edge. :func:`guided_filter` is the colour-guide filter; :func:`refine_mask_logits`
applies it to a padded batch of mask logits at (up to) the image's resolution, and
:class:`MaskRefiner` holds its settings (``MODEL.TEST.MASK_REFINE``) for a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_filter", "guided_filter", "refine_mask_logits", "MaskRefiner"]


def box_filter(x: Tensor, radius: int) -> Tensor:
    """Mean over the (2r+1) x (2r+1) window around each pixel of [N, C, H, W] (windows cut at
    the border average only the pixels inside). Separable: a row pass then a column pass, each
    border-normalised, which equals the 2-D mean over the cut window (a rectangle)."""
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float,
                  chunk_size: int = 32, subsample: int = 1) -> Tensor:
    """Filter ``src`` Tensor[Q, H, W] with the colour ``guide`` Tensor[3, H, W] (any range;
    ``eps`` is on its scale: larger ``eps`` smooths more across weak edges).

    Per window, ``q = a . I + b`` fits ``src`` by ridge regression on the guide's colours; the
    output averages the fits of the windows covering each pixel. The 3x3 covariance of the guide
    is solved once and shared by the ``Q`` masks, filtered ``chunk_size`` at a time. With
    ``subsample`` s > 1 the coefficients are fitted on both images shrunk s times (radius r / s)
    and upsampled before ``a . I + b`` is formed at full resolution (the fast guided filter of
    He and Sun, 2015): s^2 times less work for nearly the same output.
    """
    if guide.dim() != 3 or guide.shape[0] != 3:
        raise ValueError(f"guide must be Tensor[3, H, W]; got {tuple(guide.shape)}")
    if src.dim() != 3 or src.shape[-2:] != guide.shape[-2:]:
        raise ValueError(f"src must be Tensor[Q, H, W] of the guide's size "
                         f"{tuple(guide.shape[-2:])}; got {tuple(src.shape)}")
    if radius < 1 or eps <= 0 or subsample < 1:
        raise ValueError(f"guided_filter needs radius >= 1, eps > 0 and subsample >= 1; got "
                         f"{radius}, {eps}, {subsample}")
    full = guide.float()[None]  # (1, 3, H, W)
    size = tuple(full.shape[-2:])
    lo = (max(1, -(-size[0] // subsample)), max(1, -(-size[1] // subsample)))

    def shrink(x: Tensor) -> Tensor:
        if lo == size:
            return x
        return F.interpolate(x, size=lo, mode="bilinear", align_corners=False, antialias=True)

    r = max(1, round(radius / subsample))
    g = shrink(full)
    h, w = lo
    mean_g = box_filter(g, r)  # (1, 3, h, w)
    outer = (g[:, :, None] * g[:, None]).flatten(1, 2)  # (1, 9, h, w)
    cov = box_filter(outer, r).view(3, 3, h, w) - mean_g[0, :, None] * mean_g[0, None]
    eye = torch.eye(3, device=g.device, dtype=g.dtype)
    inv = torch.linalg.inv(cov.permute(2, 3, 0, 1) + eps * eye).permute(2, 3, 0, 1)  # 3,3,h,w
    out = []
    for p in src.float().split(max(1, int(chunk_size))):
        p = shrink(p[:, None])  # (q, 1, h, w)
        mean_p = box_filter(p, r)
        cov_gp = box_filter(g * p, r) - mean_g * mean_p  # (q, 3, h, w)
        a = (inv[None] * cov_gp[:, None]).sum(2)  # (q, 3, h, w): inv @ cov_gp per pixel
        b = mean_p - (a * mean_g).sum(1, keepdim=True)  # (q, 1, h, w)
        ab = box_filter(torch.cat([a, b], 1), r)  # (q, 4, h, w)
        if lo != size:
            ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
        out.append((ab[:, :3] * full).sum(1) + ab[:, 3])
    return torch.cat(out).to(src.dtype) if out else src.clone()


def _check_settings(radius: float, eps: float, max_side: int, subsample: int) -> None:
    if not (radius > 0 and eps > 0 and max_side >= 0 and subsample >= 1):
        raise ValueError(f"MODEL.TEST.MASK_REFINE needs RADIUS > 0, EPS > 0, MAX_SIDE >= 0 and "
                         f"SUBSAMPLE >= 1; got {radius}, {eps}, {max_side}, {subsample}")


def refine_mask_logits(mask_logits: Tensor, images: Tensor, radius: float = 1.5,
                       eps: float = 1e-3, max_side: int = 512, subsample: int = 1,
                       image_sizes: list[tuple[int, int]] | None = None,
                       chunk_size: int = 32) -> Tensor:
    """Mask logits [B, Q, h, w] over a padded batch of ``images`` [B, 3, H, W] (colours in
    [0, 1]) -> refined logits [B, Q, H', W'] at the images' resolution (``H', W'`` scaled down so
    that the longer side is at most ``max_side``; 0 = no cap).

    ``radius`` is in mask cells (one cell = ``H / h`` image pixels), so the window covers the
    same share of an object whatever the resolution. ``image_sizes`` (the unpadded size of each
    image, top-left of the frame) keeps the filter inside each image; the padding keeps the
    upsampled logits. ``subsample``: see :func:`guided_filter`.
    """
    if mask_logits.dim() != 4 or images.dim() != 4 or images.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"mask_logits [B,Q,h,w] and images [B,3,H,W] expected; got "
                         f"{tuple(mask_logits.shape)} and {tuple(images.shape)}")
    _check_settings(radius, eps, max_side, subsample)
    big, (hp, wp) = max(images.shape[-2:]), images.shape[-2:]
    scale = min(1.0, max_side / big) if max_side else 1.0
    size = (max(1, round(hp * scale)), max(1, round(wp * scale)))
    up = F.interpolate(mask_logits.float(), size=size, mode="bilinear", align_corners=False)
    guide = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False,
                          antialias=scale < 1) if size != (hp, wp) else images.float()
    r = max(1, round(radius * size[0] / mask_logits.shape[-2]))
    out = up.clone()
    for i in range(up.shape[0]):
        h, w = image_sizes[i] if image_sizes is not None else (hp, wp)
        h, w = max(1, min(size[0], round(h * scale))), max(1, min(size[1], round(w * scale)))
        probs = guided_filter(guide[i, :, :h, :w], up[i, :, :h, :w].sigmoid(), r, eps,
                              chunk_size, subsample)
        out[i, :, :h, :w] = torch.logit(probs.clamp(1e-4, 1 - 1e-4))
    return out.to(mask_logits.dtype)


@dataclass(frozen=True)
class MaskRefiner:
    """The settings of :func:`refine_mask_logits` (checked once), applied by calling it."""

    radius: float = 1.5
    eps: float = 1e-3
    max_side: int = 512
    subsample: int = 1

    def __post_init__(self) -> None:
        _check_settings(self.radius, self.eps, self.max_side, self.subsample)

    @classmethod
    def from_config(cls, cfg) -> "MaskRefiner | None":
        """The refiner of ``cfg.MODEL.TEST.MASK_REFINE``, or None when it is not enabled."""
        c = cfg.MODEL.TEST.MASK_REFINE
        if not c.ENABLED:
            return None
        return cls(float(c.RADIUS), float(c.EPS), int(c.MAX_SIDE), int(c.SUBSAMPLE))

    def __call__(self, mask_logits: Tensor, images: Tensor,
                 image_sizes: list[tuple[int, int]] | None = None) -> Tensor:
        return refine_mask_logits(mask_logits, images, self.radius, self.eps, self.max_side,
                                  self.subsample, image_sizes)
