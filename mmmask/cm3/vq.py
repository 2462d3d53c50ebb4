"""VQ image tokenizer: conv encoder -> vector quantizer (EMA codebook) -> conv decoder.

``encode(images) -> LongTensor[B, h, w]`` and ``decode(ids) -> images in [0, 1]`` are inverse up to
the reconstruction error; ``quantize(features)`` equals the codebook lookup of the ids it returns.
As the ``VQTokenizer`` meta-architecture, ``forward(batch)`` takes the mapper's list of dicts and
returns the training losses (train mode) or reconstructions (eval mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import VectorQuantize

from ..config import configurable
from ..registry import GENERATIVE_MODEL_REGISTRY, META_ARCH_REGISTRY

__all__ = ["VQTokenizer", "VQOutput", "psnr", "codebook_usage", "code_perplexity",
           "images_to_unit"]


def images_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images Tensor[B, 3, H, W] -> float in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected images of shape [B, 3, H, W]; got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _widths(hidden: int, levels: int) -> list[int]:
    return [hidden * min(2 ** i, 2) for i in range(levels)]


class _Encoder(nn.Module):
    """Strided 4x4 convs (each halves the side) with a residual block after each; no full-
    resolution blocks, so the cost stays low on a CPU."""

    def __init__(self, hidden: int, levels: int, out_dim: int) -> None:
        super().__init__()
        w = _widths(hidden, levels)
        layers: list[nn.Module] = []
        for i in range(levels):
            layers += [nn.Conv2d(3 if i == 0 else w[i - 1], w[i], 4, stride=2, padding=1),
                       _ResBlock(w[i])]
        layers += [nn.GroupNorm(min(8, w[-1]), w[-1]), nn.SiLU(), nn.Conv2d(w[-1], out_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Decoder(nn.Module):
    """Mirror of :class:`_Encoder`: residual blocks then 4x4 transposed convs (each doubles)."""

    def __init__(self, hidden: int, levels: int, in_dim: int) -> None:
        super().__init__()
        w = _widths(hidden, levels)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(in_dim, w[0], 3, padding=1)]
        for i in range(levels):
            last = i == levels - 1
            layers += [_ResBlock(w[i])]
            if last:
                layers += [nn.GroupNorm(min(8, w[i]), w[i]), nn.SiLU()]
            layers += [nn.ConvTranspose2d(w[i], 3 if last else w[i + 1], 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class VQOutput:
    """reconstruction: float Tensor[B, 3, H, W] in [-1, 1] space (unclamped); ids: LongTensor[B, h,
    w]; quantized: Tensor[B, D, h, w]; commit_loss: scalar."""

    reconstruction: torch.Tensor
    ids: torch.Tensor
    quantized: torch.Tensor
    commit_loss: torch.Tensor


@META_ARCH_REGISTRY.register()
@GENERATIVE_MODEL_REGISTRY.register()
class VQTokenizer(nn.Module):
    """Images <-> grids of codebook ids (``image_size / downsample`` tokens per side)."""

    @configurable
    def __init__(self, *, image_size: int = 64, downsample: int = 8, codebook_size: int = 256,
                 codebook_dim: int = 32, hidden_dim: int = 64, commitment_weight: float = 0.25,
                 ema_decay: float = 0.9, kmeans_init: bool = True, dead_code_threshold: float = 1.0,
                 recon_loss: str = "l1", edge_loss_weight: float = 0.0) -> None:
        super().__init__()
        levels = int(round(math.log2(downsample))) if downsample > 0 else -1
        if levels < 1 or 2 ** levels != downsample:
            raise ValueError(f"downsample must be a power of 2 >= 2; got {downsample}")
        if image_size % downsample:
            raise ValueError(f"image_size {image_size} is not divisible by downsample {downsample}")
        if recon_loss not in ("l1", "mse"):
            raise ValueError(f"recon_loss must be 'l1' or 'mse'; got {recon_loss!r}")
        self.image_size, self.downsample = image_size, downsample
        self.codebook_size, self.recon_loss, self.edge_loss_weight = (
            codebook_size, recon_loss, edge_loss_weight)
        self.encoder = _Encoder(hidden_dim, levels, codebook_dim)
        self.quantizer = VectorQuantize(
            dim=codebook_dim,
            codebook_size=codebook_size,
            decay=ema_decay,  # EMA codebook updates
            kmeans_init=kmeans_init,  # codebook initialised by k-means on the first batch
            threshold_ema_dead_code=dead_code_threshold,  # re-seed unused codes from the batch
            commitment_weight=commitment_weight,
            accept_image_fmap=True,  # [B, D, h, w] in, ids [B, h, w] out
        )
        self.decoder = _Decoder(hidden_dim, levels, codebook_dim)

    @classmethod
    def from_config(cls, cfg) -> dict:
        v = cfg.CM3.VQ
        return dict(image_size=v.IMAGE_SIZE, downsample=v.DOWNSAMPLE,
                    codebook_size=v.CODEBOOK_SIZE, codebook_dim=v.CODEBOOK_DIM,
                    hidden_dim=v.HIDDEN_DIM, commitment_weight=v.COMMITMENT_WEIGHT,
                    ema_decay=v.EMA_DECAY, kmeans_init=v.KMEANS_INIT,
                    dead_code_threshold=v.DEAD_CODE_THRESHOLD, recon_loss=v.RECON_LOSS,
                    edge_loss_weight=v.EDGE_LOSS_WEIGHT)

    @property
    def grid_size(self) -> int:
        """Tokens per side (h = w)."""
        return self.image_size // self.downsample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- tensor API --------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images_to_unit(images).to(self.device)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"Images must be {self.image_size}x{self.image_size}; got "
                             f"{tuple(x.shape[-2:])} (resize first)")
        return x * 2.0 - 1.0  # [-1, 1]

    def quantize(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features Tensor[B, D, h, w] -> (quantized Tensor[B, D, h, w], ids LongTensor[B, h, w]).
        """
        q, ids, _ = self.quantizer(features)
        return q, ids

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids LongTensor[B, h, w] -> codebook vectors Tensor[B, D, h, w]."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(f"Codebook ids must lie in [0, {self.codebook_size})")
        return self.quantizer.get_output_from_indices(ids.to(self.device))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8/float Tensor[B, 3, H, W] -> ids LongTensor[B, h, w] (never updates EMA)."""
        was = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantize(self.encoder(self._prepare(images)))[1]
        finally:
            self.quantizer.train(was)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids LongTensor[B, h, w] -> images float Tensor[B, 3, H, W] in [0, 1]."""
        return ((self.decoder(self.lookup(ids)) + 1.0) / 2.0).clamp(0.0, 1.0)

    def reconstruct(self, images: torch.Tensor) -> VQOutput:
        """Full pass with gradients (training): encode, quantize (straight-through), decode."""
        z = self.encoder(self._prepare(images))
        q, ids, commit = self.quantizer(z)
        return VQOutput(self.decoder(q), ids, q, commit)

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction (L1 or L2 in [-1, 1] space) + commitment (+ edge) losses."""
        target = self._prepare(images)
        out = self.reconstruct(images)
        fn = F.l1_loss if self.recon_loss == "l1" else F.mse_loss
        losses = {"loss_recon": fn(out.reconstruction, target),
                  "loss_commit": out.commit_loss.reshape(())}
        if self.edge_loss_weight > 0:
            r, t = out.reconstruction, target
            edge = (F.l1_loss(r[..., 1:, :] - r[..., :-1, :], t[..., 1:, :] - t[..., :-1, :])
                    + F.l1_loss(r[..., 1:] - r[..., :-1], t[..., 1:] - t[..., :-1]))
            losses["loss_edge"] = self.edge_loss_weight * edge
        return losses

    # ---- meta-architecture API ---------------------------------------------------------------
    def forward(self, batch: list[dict]):
        """Train mode: dict of losses. Eval mode: per image ``{"reconstruction": uint8
        Tensor[3, H, W], "codes": LongTensor[h, w], "psnr": float}``."""
        if not isinstance(batch, (list, tuple)) or not batch:
            raise ValueError("VQTokenizer.forward takes a non-empty list of mapper dicts "
                             "(use encode/decode/reconstruct for tensors)")
        images = torch.stack([d["image"] for d in batch]).to(self.device)
        if self.training:
            return self.losses(images)
        ids = self.encode(images)
        recon = self.decode(ids)
        target = images_to_unit(images).to(recon.device)
        return [{"reconstruction": (r * 255).round().to(torch.uint8), "codes": c,
                 "psnr": float(psnr(r[None], t[None]))} for r, c, t in zip(recon, ids, target)]


# ---- metrics (pure) ---------------------------------------------------------------------------

def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Mean PSNR (dB) over a batch of images Tensor[B, ...] with values in [0, max_val]."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1).clamp(min=1e-10)
    return (10 * torch.log10(max_val ** 2 / mse)).mean()


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the codebook used at least once in ``ids``."""
    return float(torch.unique(ids).numel()) / codebook_size


def code_perplexity(ids: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code histogram: 1 (one code) .. codebook_size (uniform use)."""
    counts = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    p = counts / counts.sum().clamp(min=1)
    return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
