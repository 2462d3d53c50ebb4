"""Contrastive CLIP pretraining on image-caption pairs (the Shapes-OV stand-in for web data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmmask.config import configurable
from mmmask.registry import META_ARCH_REGISTRY

from .models import create_clip, tokenizer_for

__all__ = ["CLIPPretrainer", "contrastive_loss"]


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                     captions: list[str] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; img/txt Tensor[B, D] L2-normalised.

    Identical captions in a batch are all counted as positives (soft targets), so two images
    captioned "a red star" do not push each other apart.
    """
    logits = logit_scale * img @ txt.t()  # (B, B)
    if captions is not None:
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=img.dtype,
                            device=img.device)
        target = same / same.sum(dim=1, keepdim=True)
    else:
        target = torch.eye(len(img), dtype=img.dtype, device=img.device)
    loss_i = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(target.t() * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return (loss_i + loss_t) / 2


@META_ARCH_REGISTRY.register()
class CLIPPretrainer(nn.Module):
    """Trains an open_clip model contrastively. Input dicts: ``{"image": uint8 [3,S,S], "caption"}``.

    Train mode returns ``{"loss_clip"}``; the trained model is ``self.clip`` (its state dict keys
    are those of the open_clip model under the ``clip.`` prefix).
    """

    @configurable
    def __init__(self, *, model_name: str, pretrained: str = ""):
        super().__init__()
        self.clip, mean, std = create_clip(model_name, pretrained)
        self.tokenizer = tokenizer_for(model_name)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1) * 255, persistent=False)

    @classmethod
    def from_config(cls, cfg):
        return {"model_name": cfg.MODEL.CLIP.MODEL_NAME, "pretrained": cfg.MODEL.CLIP.PRETRAINED}

    def forward(self, batch: list[dict]):
        device = self.pixel_mean.device
        images = torch.stack([d["image"] for d in batch]).to(device)
        images = (images.float() - self.pixel_mean) / self.pixel_std
        captions = [d["caption"] for d in batch]
        tokens = self.tokenizer(captions).to(device)
        img = F.normalize(self.clip.encode_image(images), dim=-1)
        txt = F.normalize(self.clip.encode_text(tokens), dim=-1)
        if not self.training:
            return [{"image_embedding": i, "text_embedding": t} for i, t in zip(img, txt)]
        scale = self.clip.logit_scale.exp().clamp(max=100)
        return {"loss_clip": contrastive_loss(img, txt, scale, captions)}
