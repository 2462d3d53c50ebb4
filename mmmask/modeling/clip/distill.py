"""Region self-distillation of CLIP's dense features (after CLIPSelf; no labels needed).

A CLIP names a whole crop far better than a region pooled from its dense map of a larger scene:
the segmenter's classifiers (mask pooling, Mask-Adapter) pool frozen dense features, so this gap
caps their accuracy. The distiller trains the image tower (the student) so that its dense map,
pooled over a box of a scene, gives the embedding that a frozen copy of the starting model (the
teacher) gives to the same box cut out and resized as an image of its own. Boxes are the cells of
a random m x n grid per image (m, n uniform in 1..``max_grid``). The text tower is not trained, so
the student stays in the teacher's (and the text encoder's) embedding space.

Its state dict has the ``clip.`` keys of :class:`CLIPPretrainer` (``MODEL.CLIP.PRETRAINED`` of the
segmenter configs loads it); the teacher is not part of it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from mmmask.config import configurable
from mmmask.registry import META_ARCH_REGISTRY

from .backbone import CLIPBackbone

__all__ = ["CLIPDenseDistiller", "grid_boxes"]


def grid_boxes(height: int, width: int, rows: int, cols: int) -> torch.Tensor:
    """Tensor[rows*cols, 4] XYXY boxes (pixels) of a rows x cols grid over the image, row-major."""
    ys = torch.linspace(0, height, rows + 1)
    xs = torch.linspace(0, width, cols + 1)
    return torch.stack([torch.stack([xs[j], ys[i], xs[j + 1], ys[i + 1]])
                        for i in range(rows) for j in range(cols)])


@META_ARCH_REGISTRY.register()
class CLIPDenseDistiller(CLIPBackbone):
    """Train mode: ``batch`` of ``{"image": uint8 [3,H,W]}`` -> ``{"loss_distill"}``.

    Only the image tower learns (``clip.visual``); see the module docstring.
    """

    @configurable
    def __init__(self, *, model_name: str, pretrained: str = "", crop_size: int = 64,
                 max_grid: int = 4, templates: str = "shapes"):
        super().__init__(model_name=model_name, pretrained=pretrained, frozen=False,
                         templates=templates)
        if crop_size < 8 or max_grid < 1:
            raise ValueError(f"crop_size must be >= 8 and max_grid >= 1; got {crop_size}, "
                             f"{max_grid}")
        self.crop_size = int(crop_size)
        self.max_grid = int(max_grid)
        for name, p in self.clip.named_parameters():
            p.requires_grad_(name.startswith("visual."))
        teacher = copy.deepcopy(self.clip.visual).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self._teacher = [teacher]  # a list: kept out of the state dict and of .parameters()
        self.stride = self.output_shape()["clip_dense"][1]

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CLIP
        return {"model_name": c.MODEL_NAME, "pretrained": c.PRETRAINED,
                "crop_size": c.DISTILL_CROP_SIZE, "max_grid": c.DISTILL_MAX_GRID,
                "templates": c.PROMPT_TEMPLATES}

    @property
    def teacher(self) -> torch.nn.Module:
        t = self._teacher[0]
        device = self.pixel_mean.device
        if next(t.parameters()).device != device:
            t.to(device)
        return t

    def _sample_boxes(self, n: int, h: int, w: int) -> list[torch.Tensor]:
        out = []
        for _ in range(n):
            rows, cols = torch.randint(1, self.max_grid + 1, (2,)).tolist()
            out.append(grid_boxes(h, w, rows, cols).to(self.pixel_mean.device))
        return out

    def forward(self, batch: list[dict]):
        device = self.pixel_mean.device
        images = self.normalize(torch.stack([d["image"] for d in batch]).to(device))
        b, _, h, w = images.shape
        boxes = self._sample_boxes(b, h, w)
        with torch.no_grad():  # teacher: every box as an image of its own
            crops = torch.cat([
                roi_align(images[i:i + 1], [bx], output_size=(self.crop_size, self.crop_size),
                          spatial_scale=1.0, sampling_ratio=2, aligned=True)
                for i, bx in enumerate(boxes)])
            target = F.normalize(self.teacher(crops), dim=-1)
        dense = self._features(images)["clip_dense"]  # (B, C, h/s, w/s)
        pooled = roi_align(dense, boxes, output_size=(2, 2), spatial_scale=1.0 / self.stride,
                           sampling_ratio=2, aligned=True).mean(dim=(2, 3))  # (N, C)
        student = F.normalize(self.dense_to_embedding(pooled), dim=-1)
        if not self.training:
            return [{"cosine": (student * target).sum(-1)}]
        return {"loss_distill": (1 - (student * target).sum(-1)).mean()}
