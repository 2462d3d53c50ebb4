"""Crop-and-classify: the two-stage baseline mask classifier (no dense features).

Each mask's square box (``context`` times the mask's extent, centred on it) is cut from the image
and resized to CLIP's training image size (``torchvision.ops.roi_align``, one call per batch);
pixels outside the mask are optionally faded towards the mean pixel (``background`` = the share
of them kept). The crops go through CLIP's own image tower, and the embeddings are compared with
the vocabulary's text embeddings as in :mod:`.mask_pooling`. One CLIP forward per mask: slower
than pooling, but it sees each object at the scale CLIP was trained on. A test-time ensemble
averages the embeddings of crops at more box sizes (``extra_contexts``), of their mirror
images (``flip``) and of the crops turned by quarter turns (``rotations``), one more CLIP forward
per mask for each view.

With ``tower`` (a copy of CLIP's image tower, ``MODEL.MASK_CROP.OWN_TOWER``) the crops go through
that copy, which can be trained on masked crops of the seen classes against CLIP's frozen text
embeddings (a mask-adapted CLIP, ``MODEL.MASK_CROP.TRAIN``), while the backbone stays frozen for
the dense classifiers and the mask generator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..config import configurable
from ..registry import MASK_CLASSIFIER_REGISTRY
from .clip.pretrain import contrastive_loss
from .mask_pooling import (MAX_LOGIT_SCALE, ClassifierOutput, check_classifier_inputs,
                           classifier_losses, cosine_logits)
from .postprocess import resize_masks

__all__ = ["MaskCrop", "mask_boxes", "resize_mask_probs"]


def resize_mask_probs(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., h, w] mask probabilities -> [..., *size], interpolated bilinearly as logits: an
    outline between two coarse pixels keeps its place and stays sharp (resizing the
    probabilities themselves would smear it over a coarse pixel)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    logits = torch.logit(masks.reshape(-1, *masks.shape[-2:]).float(), eps=1e-4)
    out = resize_masks(logits, tuple(size)).sigmoid()
    return out.reshape(*masks.shape[:-2], *size).to(masks.dtype)


def mask_boxes(masks: Tensor, context: float | Tensor, threshold: float = 0.5) -> Tensor:
    """Square boxes around masks, in pixels of the masks' frame.

    Args:
        masks: [N, H, W] probabilities; pixels above ``threshold`` belong to the mask.
        context: box side / the mask's larger extent (1 = tight); one for all masks or a
            Tensor[N], one per mask.

    Returns:
        [N, 4] float XYXY boxes, clipped to the frame; an empty mask gets the whole frame.
    """
    n, h, w = masks.shape
    on = masks > threshold
    rows, cols = on.any(2), on.any(1)  # [N, H], [N, W]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = max(h, w)
    y0 = torch.where(rows, ar_h, big).amin(1).float()
    y1 = torch.where(rows, ar_h, -1).amax(1).float() + 1
    x0 = torch.where(cols, ar_w, big).amin(1).float()
    x1 = torch.where(cols, ar_w, -1).amax(1).float() + 1
    if isinstance(context, Tensor):
        context = context.to(device=masks.device, dtype=torch.float32)
    side = torch.maximum(y1 - y0, x1 - x0) * context
    side = side.clamp(min=1.0)
    side = torch.minimum(side, torch.tensor(float(min(h, w)), device=masks.device))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    by0 = (cy - side / 2).clamp(min=0)
    bx0 = (cx - side / 2).clamp(min=0)
    by0 = torch.minimum(by0, h - side)  # shift inside the frame rather than shrink
    bx0 = torch.minimum(bx0, w - side)
    boxes = torch.stack([bx0, by0, bx0 + side, by0 + side], dim=1)
    empty = ~rows.any(1)
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=masks.device)
    return torch.where(empty[:, None], whole, boxes)


@MASK_CLASSIFIER_REGISTRY.register()
class MaskCrop(nn.Module):
    """Baseline classifier: crop each mask's box from the image and encode it with CLIP.

    Its parameters are the logit scale, the void logit and, with ``tower``, its own image
    tower. Needs the images: the meta-architecture passes them when ``needs_images`` is True.
    """

    needs_images = True

    @configurable
    def __init__(self, *, dense_dim: int, embed_dim: int, crop_size: int = 64,
                 context: float = 1.5, background: float = 0.0, batch_size: int = 256,
                 logit_scale: float = 20.0, void_logit: float = 0.0, class_weight: float = 1.0,
                 consistency_weight: float = 1.0, void_weight: float = 0.1,
                 learnable: bool = True, extra_contexts: tuple[float, ...] = (),
                 flip: bool = False, rotations: tuple[int, ...] = (),
                 train_context_jitter: float = 0.0, train_flip: bool = False,
                 train_rotate: bool = False, tower: nn.Module | None = None,
                 text_tower: nn.Module | None = None) -> None:
        """
        Args:
            dense_dim, embed_dim: CLIP's dense channels (only checked) and embedding size.
            crop_size: side of the crops fed to CLIP (its training image size).
            context: box side / mask extent; background: share of the pixels outside the mask
                kept in the crop (1 = the box as is, 0 = filled with the mean pixel).
            batch_size: crops per CLIP forward (bounds memory).
            logit_scale, void_logit, *_weight: as for :class:`MaskPooling`.
            learnable: False keeps the logit scale and void logit as fixed, unsaved buffers
                (the inference-only fusion copy, which then adds nothing to checkpoints).
            extra_contexts: more box sizes; each mask's embedding is the normalised mean over
                ``context`` and these.
            flip: also embed every crop mirrored left-right and average it in.
            rotations: also embed every crop (and its mirror image with ``flip``) turned by each
                of these angles in degrees (90, 180 or 270, counter-clockwise) and average them
                in. Only for data whose objects and textures come in any orientation (180 keeps
                what is horizontal horizontal).
            train_context_jitter: in training, each mask's box size is ``context`` times
                ``(1 + j) ** u`` with ``u`` uniform in [-1, 1] (0 = off), so the tower learns
                objects framed as loosely or tightly as imperfect predicted masks frame them.
            train_flip: in training, mirror each crop left-right with probability 1/2.
            train_rotate: in training, turn each crop by an angle drawn uniformly from 0 and
                ``rotations``, so that the tower learns the views it is shown at test time.
            tower: an image encoder (normalised Tensor[N,3,S,S] -> Tensor[N,embed_dim]) used
                instead of ``backbone.encode_image``, e.g. a trainable copy of CLIP's.
            text_tower: a text encoder with ``encode_vocabulary(vocab) -> Tensor[S, D]`` (e.g.
                :class:`mmmask.modeling.clip.TextTower`) whose class embeddings replace the
                ones the caller passes (see :meth:`text_embeddings`).
        """
        super().__init__()
        if crop_size < 8:
            raise ValueError("MaskCrop crop size (MODEL.MASK_CROP.CROP_SIZE, else "
                             f"MODEL.CLIP.IMAGE_SIZE) must be >= 8; got {crop_size}")
        if context < 1:
            raise ValueError(f"MODEL.MASK_CROP.CONTEXT must be >= 1 (1 = tight box); got {context}")
        extra_contexts = tuple(float(c) for c in extra_contexts)
        if any(c < 1 for c in extra_contexts):
            raise ValueError("MODEL.MASK_CROP.EXTRA_CONTEXTS must all be >= 1 (1 = tight box); "
                             f"got {extra_contexts}")
        if train_context_jitter < 0:
            raise ValueError("MODEL.MASK_CROP.TRAIN_CONTEXT_JITTER must be >= 0 (0 = off); got "
                             f"{train_context_jitter}")
        if not 0 <= background <= 1:
            raise ValueError(f"MODEL.MASK_CROP.BACKGROUND must lie in [0, 1]; got {background}")
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0; got {logit_scale}")
        self.dense_dim, self.embed_dim = dense_dim, embed_dim
        self.crop_size, self.context = int(crop_size), float(context)
        self.contexts = (self.context,) + extra_contexts
        self.flip = bool(flip)
        rotations = tuple(int(r) for r in rotations)
        if any(r not in (90, 180, 270) for r in rotations) or len(set(rotations)) < len(rotations):
            raise ValueError("MODEL.MASK_CROP.ROTATIONS takes distinct angles out of 90, 180 and "
                             f"270 (degrees); got {rotations}")
        self.rotations = rotations
        self.train_context_jitter, self.train_flip = float(train_context_jitter), bool(train_flip)
        self.train_rotate = bool(train_rotate)
        self.background = float(background)
        self.batch_size = max(1, int(batch_size))
        scale, void = torch.tensor(math.log(logit_scale)), torch.tensor(float(void_logit))
        if learnable:
            self.log_logit_scale, self.void_logit = nn.Parameter(scale), nn.Parameter(void)
        else:
            self.register_buffer("log_logit_scale", scale, persistent=False)
            self.register_buffer("void_logit", void, persistent=False)
        self.class_weight, self.consistency_weight = class_weight, consistency_weight
        self.void_weight = void_weight
        self.tower = tower
        self.text_tower = text_tower

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        ma, mc = cfg.MODEL.MASK_ADAPTER, cfg.MODEL.MASK_CROP
        return {"crop_size": mc.CROP_SIZE or cfg.MODEL.CLIP.IMAGE_SIZE, "context": mc.CONTEXT,
                "background": mc.BACKGROUND, "batch_size": mc.BATCH_SIZE,
                "logit_scale": mc.LOGIT_SCALE, "class_weight": ma.CLASS_WEIGHT,
                "consistency_weight": ma.CONSISTENCY_WEIGHT, "void_weight": ma.VOID_WEIGHT,
                "extra_contexts": tuple(mc.EXTRA_CONTEXTS), "flip": mc.FLIP,
                "rotations": tuple(mc.ROTATIONS),
                "train_context_jitter": mc.TRAIN_CONTEXT_JITTER, "train_flip": mc.TRAIN_FLIP,
                "train_rotate": mc.TRAIN_ROTATE}

    def text_embeddings(self, vocab: Any, shared: Tensor) -> Tensor:
        """The class embeddings to name masks with: ``text_tower``'s for ``vocab`` when there is
        one, else ``shared`` (the backbone's, Tensor[S, D])."""
        if self.text_tower is None:
            return shared
        return self.text_tower.encode_vocabulary(vocab).to(shared)

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def crops(self, images: Tensor, masks: Tensor, context: float | None = None) -> Tensor:
        """[B, 3, H, W] normalised images, [B, Q, H', W'] masks -> [B*Q, 3, S, S] crops
        (boxes of ``context`` times the mask's extent; default: ``self.context``)."""
        if masks.shape[1] == 0:
            return images.new_zeros(0, 3, self.crop_size, self.crop_size)
        return self._crops(images, self._image_frame(images, masks), context)

    @staticmethod
    def _image_frame(images: Tensor, masks: Tensor) -> Tensor:
        """Masks resized to the images' frame, flattened to [B*Q, 1, H, W]."""
        full = resize_mask_probs(masks.to(images.dtype), tuple(images.shape[-2:]))
        return full.flatten(0, 1)[:, None]

    def _crops(self, images: Tensor, flat: Tensor, context: float | Tensor | None) -> Tensor:
        """Crops of ``flat`` masks ([B*Q, 1, H, W], image frame, grouped by image); ``context``
        one box size for all masks or a Tensor[B*Q]."""
        n, b = len(flat), images.shape[0]
        context = self.context if context is None else context
        boxes = mask_boxes(flat[:, 0], context)  # [B*Q, 4]
        index = torch.arange(b, device=images.device).repeat_interleave(n // b)[:, None].to(boxes)
        size = (self.crop_size, self.crop_size)
        out = roi_align(images, torch.cat([index, boxes], dim=1), size, spatial_scale=1.0,
                        sampling_ratio=2, aligned=True)
        if self.background < 1:
            own = torch.arange(n, device=images.device)[:, None].to(boxes)
            m = roi_align(flat, torch.cat([own, boxes], dim=1), size, spatial_scale=1.0,
                          sampling_ratio=2, aligned=True).clamp(0, 1)
            out = out * (m + (1 - m) * self.background)  # normalised 0 = the mean pixel
        return out

    def forward(self, dense: Tensor, masks: Tensor, text_emb: Tensor, backbone: Any,
                images: Tensor | None = None) -> ClassifierOutput:
        """Name every mask from its crop of ``images`` ([B, 3, H, W], CLIP-normalised, the
        frame the masks cover); ``dense`` is only checked. See :class:`MaskPooling`."""
        encode = backbone.encode_image if self.tower is None else self.tower
        check_classifier_inputs(dense, masks, text_emb, self.dense_dim)
        if images is None:
            raise ValueError("MaskCrop classifies image crops: pass images=")
        b, q = masks.shape[:2]
        emb = images.new_zeros(b * q, self.embed_dim, dtype=torch.float32)
        if b * q:
            flat = self._image_frame(images, masks)  # resized once for every box size
            for context in self.contexts:
                if self.training and self.train_context_jitter > 0:
                    u = torch.rand(b * q, device=images.device) * 2 - 1
                    context = context * (1 + self.train_context_jitter) ** u
                crops = self._crops(images, flat, context)
                if self.training and self.train_flip:
                    mirror = torch.rand(b * q, device=images.device) < 0.5
                    crops = torch.where(mirror[:, None, None, None], crops.flip(-1), crops)
                if self.training and self.train_rotate:
                    crops = self._turn_at_random(crops)
                for view in self._views(crops):
                    e = torch.cat([encode(c) for c in view.split(self.batch_size)])
                    emb = emb + F.normalize(e.float(), dim=-1)
        emb = F.normalize(emb, dim=-1).reshape(b, q, self.embed_dim)
        logits = cosine_logits(emb, text_emb, self.logit_scale, self.void_logit)
        return ClassifierOutput(logits=logits, embeddings=emb)

    def _turn_at_random(self, crops: Tensor) -> Tensor:
        """Each of ``crops`` turned by an angle drawn uniformly from 0 and ``rotations`` (checked
        here, when training, so that a config recording ``train_rotate`` still serves inference
        without the turned views)."""
        if not self.rotations:
            raise ValueError("MODEL.MASK_CROP.TRAIN_ROTATE turns crops by the angles of "
                             "MODEL.MASK_CROP.ROTATIONS, which is empty")
        pick = torch.randint(len(self.rotations) + 1, (len(crops),), device=crops.device)
        out = crops
        for i, angle in enumerate(self.rotations, start=1):
            turned = crops.rot90(angle // 90, dims=(-2, -1))
            out = torch.where((pick == i)[:, None, None, None], turned, out)
        return out

    def _views(self, crops: Tensor) -> list[Tensor]:
        """The test-time views of ``crops``: as cut, turned by each of ``rotations``, and each of
        those mirrored left-right with ``flip`` (in training with ``train_rotate`` the crops
        were turned at random instead, and only the mirror images are added)."""
        angles = () if self.training and self.train_rotate else self.rotations
        turned = [crops] + [crops.rot90(r // 90, dims=(-2, -1)) for r in angles]
        return [v for t in turned for v in ((t, t.flip(-1)) if self.flip else (t,))]

    def caption_loss(self, images: Tensor, captions: list[str], backbone: Any) -> Tensor:
        """Symmetric InfoNCE between whole ``images`` ([N, 3, H, W], CLIP-normalised, resized
        to the crop size) and their ``captions``, through the crops' own towers (the backbone's
        frozen ones where there is none), at the crops' logit scale."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images for {len(captions)} captions")
        if tuple(images.shape[-2:]) != (self.crop_size, self.crop_size):
            images = F.interpolate(images, size=(self.crop_size, self.crop_size),
                                   mode="bilinear", align_corners=False)
        encode = backbone.encode_image if self.tower is None else self.tower
        img = F.normalize(encode(images).float(), dim=-1)
        if self.text_tower is not None:
            txt = self.text_tower.encode_texts(captions)
        else:
            with torch.no_grad():
                txt = backbone.text.encode_texts(captions)
        return contrastive_loss(img, txt, self.logit_scale, list(captions))

    def losses(self, output: ClassifierOutput, targets_classes: Tensor,
               consistency_groups: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss_crop_ce", "loss_crop_consistency"}`` (see :func:`classifier_losses`; its own
        name for the consistency term, which adds to the main classifier's when both train)."""
        losses = classifier_losses(output, targets_classes, consistency_groups,
                                   class_weight=self.class_weight,
                                   consistency_weight=self.consistency_weight,
                                   void_weight=self.void_weight, prefix="crop")
        losses["loss_crop_consistency"] = losses.pop("loss_consistency")
        return losses
