"""The frozen CLIP image trunk as a multi-scale backbone, plus its text classifier.

One forward per image gives the multi-scale maps ``res2..res5`` (strides 4..32) for the mask
generator and the dense map ``clip_dense`` for the mask classifier, whose pooled vectors go
through CLIP's own head (:meth:`CLIPBackbone.dense_to_embedding`) into the text embedding space.

- ConvNeXt (and other timm) trunks: stage outputs; dense map = last stage.
- ViT trunks: patch tokens of four evenly spaced blocks, reshaped to maps and resized to strides
  4/8/16/32 (a simple feature pyramid); dense map = last block; positional embeddings are
  interpolated for any input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmmask.config import configurable
from mmmask.data.vocab import Vocabulary
from mmmask.registry import BACKBONE_REGISTRY

from .models import create_clip, tokenizer_for
from .text import PROMPT_TEMPLATES, TextEncoder

__all__ = ["CLIPBackbone"]

_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


@BACKBONE_REGISTRY.register()
class CLIPBackbone(nn.Module):
    """Frozen open_clip model used as image backbone and text classifier."""

    @configurable
    def __init__(self, *, model_name: str, pretrained: str = "", frozen: bool = True,
                 templates: str = "shapes", cache_size: int = 4096,
                 dense_input_scale: float = 1.0):
        super().__init__()
        if not dense_input_scale > 0:
            raise ValueError("MODEL.CLIP.DENSE_INPUT_SCALE must be positive; got "
                             f"{dense_input_scale}")
        self.dense_input_scale = float(dense_input_scale)
        if templates not in PROMPT_TEMPLATES:
            raise KeyError(f"Unknown prompt templates {templates!r}; valid: {list(PROMPT_TEMPLATES)}")
        model, mean, std = create_clip(model_name, pretrained)
        self.model_name = model_name
        self.clip = model
        self.frozen = frozen
        visual = model.visual
        self.is_vit = hasattr(visual, "conv1") and hasattr(visual, "transformer")
        if not self.is_vit and not hasattr(visual, "trunk"):
            raise ValueError(f"{model_name}: only timm (ConvNeXt-like) and ViT image towers are supported")
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1) * 255, persistent=False)
        self.text = TextEncoder(model, tokenizer_for(model_name), PROMPT_TEMPLATES[templates],
                                cache_size=cache_size)
        self._shape = self._probe_shapes()
        if frozen:
            for p in self.clip.parameters():
                p.requires_grad_(False)
            self.clip.eval()

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CLIP
        return {"model_name": c.MODEL_NAME, "pretrained": c.PRETRAINED, "frozen": c.FROZEN,
                "templates": c.PROMPT_TEMPLATES, "cache_size": c.TEXT_CACHE_SIZE,
                "dense_input_scale": c.DENSE_INPUT_SCALE}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.clip.eval()
        return self

    # -- shapes ------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """D_emb: the joint image-text embedding size."""
        return int(self._shape["embed"])

    @property
    def dense_dim(self) -> int:
        """D_dense: channels of ``clip_dense``."""
        return int(self._shape["clip_dense"][0])

    def output_shape(self) -> dict[str, tuple[int, int]]:
        """``{name: (channels, stride)}`` of res2..res5 and clip_dense."""
        return {k: v for k, v in self._shape.items() if k != "embed"}

    @torch.no_grad()
    def _probe_shapes(self) -> dict:
        x = torch.zeros(1, 3, 64, 64)
        feats = self._features(x)
        emb = self.dense_to_embedding(feats["clip_dense"].mean(dim=(2, 3)))
        shape = {k: (v.shape[1], 64 // v.shape[-1]) for k, v in feats.items()}
        shape["embed"] = emb.shape[-1]
        return shape

    # -- image side --------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float 0-255 Tensor[B,3,H,W] -> CLIP-normalised float."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def _timm_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        trunk = self.clip.visual.trunk
        feats = trunk.forward_intermediates(x, indices=4, intermediates_only=True)
        out = {name: f for name, f in zip(("res2", "res3", "res4", "res5"), feats)}
        out["clip_dense"] = out["res5"]
        return out

    def _vit_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.clip.visual
        b, _, h, w = x.shape
        x = v.conv1(x)  # (B, W, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, W)
        pos = v.positional_embedding
        cls_pos, grid_pos = pos[:1], pos[1:]
        n = int(math.sqrt(grid_pos.shape[0]))
        if (gh, gw) != (n, n):
            grid_pos = grid_pos.reshape(1, n, n, -1).permute(0, 3, 1, 2)  # (1, W, n, n)
            grid_pos = F.interpolate(grid_pos, size=(gh, gw), mode="bicubic", align_corners=False)
            grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(gh * gw, -1)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + torch.cat([cls_pos, grid_pos]).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        depth = len(blocks)
        take = {max(0, depth * k // 4 - 1): name for k, name in
                zip((1, 2, 3, 4), ("res2", "res3", "res4", "res5"))}
        out = {}
        for i, blk in enumerate(blocks):
            x = blk(x)
            if i in take:
                grid = x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)  # (B, W, gh, gw)
                out[take[i]] = grid
        dense = out["res5"]
        for name, stride in _STRIDES.items():
            size = (max(1, math.ceil(h / stride)), max(1, math.ceil(w / stride)))
            out[name] = F.interpolate(out[name], size=size, mode="bilinear", align_corners=False)
        out["clip_dense"] = dense
        return out

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._vit_features(x) if self.is_vit else self._timm_features(x)

    def _forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self._features(images)
        if self.dense_input_scale != 1.0:
            size = [max(1, round(s * self.dense_input_scale)) for s in images.shape[-2:]]
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                   antialias=self.dense_input_scale < 1)
            out["clip_dense"] = self._features(scaled)["clip_dense"]
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised Tensor[B,3,H,W] -> ``{res2..res5, clip_dense}`` feature maps.

        ``clip_dense`` comes from the image resized by ``dense_input_scale`` (a second pass
        when it is not 1): a finer map for the mask classifier, whose pooling resizes the masks
        to whatever grid it gets.
        """
        if self.frozen:
            with torch.no_grad():
                return self._forward(images)
        return self._forward(images)

    def dense_to_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's head on pooled dense features: Tensor[..., D_dense] -> Tensor[..., D_emb]."""
        v = self.clip.visual
        if self.is_vit:
            x = v.ln_post(x)
            return x @ v.proj if v.proj is not None else x
        norm = getattr(getattr(v.trunk, "head", None), "norm", None)
        if norm is not None and hasattr(norm, "weight"):
            x = F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)
        return v.head(x)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's image embedding (not normalised) of normalised Tensor[B,3,S,S] images."""
        if self.frozen:
            with torch.no_grad():
                return self.clip.encode_image(images)
        return self.clip.encode_image(images)

    # -- text side ---------------------------------------------------------------------------
    def encode_vocabulary(self, vocab: Vocabulary) -> torch.Tensor:
        """Tensor[S, D_emb]: L2-normalised embedding per synonym (cached per prompt)."""
        return self.text.encode_vocabulary(vocab)

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp().item())
