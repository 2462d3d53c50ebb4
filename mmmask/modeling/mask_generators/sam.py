"""SAM as a mask generator: automatic grid mode, batched point/box prompts, proposals.

``SAMMaskGenerator`` holds a ``segment_anything`` ``Sam`` and layers over the package's own API:
``generate`` delegates to ``SamAutomaticMaskGenerator`` (so it returns exactly its masks),
``predict`` embeds an image once (``SamPredictor.set_image``, cached by image content) and decodes
N prompts in one mask-decoder call (``SamPredictor.predict_torch``), and ``proposals`` turns the
automatic masks into the ``[1, Q, H, W]`` form a mask classifier consumes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from torch import nn

from mmmask.config import configurable
from mmmask.registry import MASK_GENERATOR_REGISTRY

from .sam_build import build_sam_model, sam_kwargs_from_cfg
from .sam_prompts import as_prompt_tensors

__all__ = ["SAMMaskGenerator", "SamPrediction", "SamImageEmbedding", "SAM"]


class SamPrediction(NamedTuple):
    """Masks for N prompts, M = 3 (multimask) or 1 masks each.

    masks: bool [N, M, H, W] at the image size; iou_preds: [N, M] predicted mask quality;
    low_res_logits: [N, M, h, w] (256 x 256 for the official SAM), a later ``mask_input``.
    """

    masks: torch.Tensor
    iou_preds: torch.Tensor
    low_res_logits: torch.Tensor


@dataclass
class SamImageEmbedding:
    """A cached image embedding: features [1, C, h, w], image (H, W), resized input (H', W')."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def as_hwc_uint8(image: Any) -> np.ndarray:
    """An RGB image as a uint8 numpy [H, W, 3]; accepts numpy/torch [H, W, 3] or torch [3, H, W]."""
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
            image = image.permute(1, 2, 0)  # [3, H, W] -> [H, W, 3]
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array or tensor; got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB [H, W, 3] (or a [3, H, W] tensor); got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 in [0, 255]; got dtype {image.dtype}")
    if min(image.shape[:2]) == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


class SAMMaskGenerator(nn.Module):
    """SAM, automatic or prompted. Registered as "SAM" in ``MASK_GENERATOR_REGISTRY``.

    The automatic settings are those of ``SamAutomaticMaskGenerator`` (MODEL.SAM.*). SAM runs on
    the image itself, not on the segmentor's CLIP features (``on_clip_features``): the segmentor
    names its masks at inference (``SegmentationPredictor.as_model("sam")``).
    """

    on_clip_features = False

    @configurable
    def __init__(
        self,
        *,
        sam: Sam,
        points_per_side: int = 32,  # grid of points_per_side^2 single-point prompts
        points_per_batch: int = 64,  # prompts decoded together
        pred_iou_thresh: float = 0.88,  # keep masks whose predicted IoU is above
        stability_score_thresh: float = 0.95,  # keep masks at least this stable
        stability_score_offset: float = 1.0,  # logit shift of the stability score
        box_nms_thresh: float = 0.7,  # box IoU of duplicate masks
        crop_n_layers: int = 0,  # extra layers of image crops (0 = whole image only)
        min_mask_region_area: int = 0,  # remove holes/islands under this area (needs opencv)
    ) -> None:
        super().__init__()
        if min_mask_region_area > 0:
            try:
                import cv2  # noqa: F401
            except ImportError:
                raise ValueError(
                    "MODEL.SAM.MIN_MASK_REGION_AREA > 0 needs opencv-python (cv2), which is not "
                    "installed; install it or set MIN_MASK_REGION_AREA to 0"
                ) from None
        self.sam = sam
        self.amg_settings = dict(
            points_per_side=int(points_per_side),
            points_per_batch=int(points_per_batch),
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_score_thresh),
            stability_score_offset=float(stability_score_offset),
            box_nms_thresh=float(box_nms_thresh),
            crop_n_layers=int(crop_n_layers),
            min_mask_region_area=int(min_mask_region_area),
        )
        self._amg = SamAutomaticMaskGenerator(sam, **self.amg_settings)  # type: ignore[arg-type]
        self._predictor = SamPredictor(sam)
        self._image_key: tuple | None = None

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.SAM
        return {
            "sam": build_sam_model(**sam_kwargs_from_cfg(cfg)),
            "points_per_side": c.POINTS_PER_SIDE,
            "points_per_batch": c.POINTS_PER_BATCH,
            "pred_iou_thresh": c.PRED_IOU_THRESH,
            "stability_score_thresh": c.STABILITY_SCORE_THRESH,
            "stability_score_offset": c.STABILITY_SCORE_OFFSET,
            "box_nms_thresh": c.BOX_NMS_THRESH,
            "crop_n_layers": c.CROP_N_LAYERS,
            "min_mask_region_area": c.MIN_MASK_REGION_AREA,
        }

    # ---- automatic mode ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, image: Any) -> list[dict[str, Any]]:
        """All masks of an RGB uint8 image [H, W, 3], as ``SamAutomaticMaskGenerator.generate``.

        Returns one record per mask: ``segmentation`` bool [H, W], ``area``, ``bbox`` (XYWH),
        ``predicted_iou``, ``stability_score``, ``point_coords`` ([[x, y]]), ``crop_box`` (XYWH),
        best ``predicted_iou`` first.
        """
        return self._amg.generate(as_hwc_uint8(image))

    @torch.no_grad()
    def proposals(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Automatic masks as mask-classifier input: masks float [1, Q, H, W] in {0, 1} and
        scores [1, Q] (SAM's predicted IoU), best first, on the model's device (Q may be 0)."""
        img = as_hwc_uint8(image)
        records = sorted(self.generate(img), key=lambda r: -r["predicted_iou"])
        h, w = img.shape[:2]
        device = self.sam.device
        if not records:
            return torch.zeros(1, 0, h, w, device=device), torch.zeros(1, 0, device=device)
        masks = torch.from_numpy(np.stack([r["segmentation"] for r in records]))  # [Q, H, W]
        scores = torch.tensor([r["predicted_iou"] for r in records], dtype=torch.float32)
        return masks.to(device).float()[None], scores.to(device)[None]

    def forward(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`proposals`."""
        return self.proposals(image)

    # ---- prompted mode ----------------------------------------------------------------------
    @staticmethod
    def _key(image: np.ndarray) -> tuple:
        return image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()

    def set_image(self, image: Any) -> SamImageEmbedding:
        """Embed an RGB image (once: a repeated image is served from the cache)."""
        img = as_hwc_uint8(image)
        key = self._key(img)
        if key != self._image_key or not self._predictor.is_image_set:
            self._image_key = None
            self._predictor.set_image(img)
            self._image_key = key
        return self.get_image_embedding()

    def get_image_embedding(self) -> SamImageEmbedding:
        """The embedding of the current image; ``RuntimeError`` before :meth:`set_image`."""
        p = self._predictor
        if not p.is_image_set:
            raise RuntimeError("No image set: call set_image(image) (or predict(image, ...)) first")
        return SamImageEmbedding(p.features, tuple(p.original_size), tuple(p.input_size))

    def set_image_embedding(self, embedding: SamImageEmbedding) -> None:
        """Make a previously computed embedding current (no encoder pass)."""
        p = self._predictor
        p.reset_image()
        p.features = embedding.features.to(self.sam.device)
        p.original_size, p.input_size = embedding.original_size, embedding.input_size
        p.is_image_set = True
        self._image_key = None

    def reset_image(self) -> None:
        """Forget the current image embedding."""
        self._predictor.reset_image()
        self._image_key = None

    @torch.no_grad()
    def predict(
        self,
        image: Any = None,
        *,
        point_coords=None,
        point_labels=None,
        boxes=None,
        mask_input=None,
        multimask_output: bool = True,
    ) -> SamPrediction:
        """Masks for N prompted objects, all decoded in one mask-decoder call.

        Args:
            image: RGB uint8 [H, W, 3] (embedded unless it is the cached one), a
                :class:`SamImageEmbedding`, or None for the current image.
            point_coords: [N, P, 2] xy pixels; point_labels: [N, P] (1 positive, 0 negative).
            boxes: [N, 4] XYXY pixels. mask_input: [N, 1, h, w] low-res logits of an earlier
                prediction (h = w = 4 * image_size / patch_size; 256 for the official SAM).
            multimask_output: 3 masks per prompt (for ambiguous single clicks) or 1.
        Returns:
            :class:`SamPrediction` with masks bool [N, M, H, W], iou_preds [N, M],
            low_res_logits [N, M, h, w].
        Raises:
            RuntimeError: no image given and none set. ValueError: bad prompts (see
                :func:`as_prompt_tensors`).
        """
        if isinstance(image, SamImageEmbedding):
            self.set_image_embedding(image)
        elif image is not None:
            self.set_image(image)
        p = self._predictor
        if not p.is_image_set:
            raise RuntimeError("No image set: pass an image to predict() or call set_image first")
        grid = self.sam.prompt_encoder.mask_input_size
        coords, labels, boxes_t, masks_t, _ = as_prompt_tensors(
            tuple(p.original_size), point_coords, point_labels, boxes, mask_input, tuple(grid)
        )
        dev = self.sam.device
        if coords is not None:
            coords = p.transform.apply_coords_torch(coords, p.original_size).to(dev)
            labels = labels.to(device=dev, dtype=torch.int)  # type: ignore[union-attr]
        if boxes_t is not None:
            boxes_t = p.transform.apply_boxes_torch(boxes_t, p.original_size).to(dev)
        if masks_t is not None:
            masks_t = masks_t.to(dev)
        masks, iou_preds, low_res = p.predict_torch(
            coords, labels, boxes_t, masks_t, multimask_output=multimask_output
        )
        return SamPrediction(masks, iou_preds, low_res)


@MASK_GENERATOR_REGISTRY.register()
def SAM(cfg) -> SAMMaskGenerator:  # noqa: N802 (the registry name)
    """Registry entry "SAM": ``SAMMaskGenerator(cfg)``."""
    return SAMMaskGenerator(cfg)


SAM.on_clip_features = SAMMaskGenerator.on_clip_features
