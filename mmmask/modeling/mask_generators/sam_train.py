"""Training SAM with simulated prompts (``SAMTrainer``) and the click-based evaluation.

Per image and GT mask (up to ``max_masks_per_image``): a first prompt, either a random positive
point in the mask (3 masks predicted, only the best by loss is trained, as in SAM) or its jittered
box; then ``num_correction_clicks`` rounds, each adding a click sampled from the error region
(false negative -> positive click, false positive -> negative) and feeding the previous low-res
logits back as ``mask_input``. Losses: focal + dice on the masks, MSE between the predicted IoU
and the actual IoU. SAM is class-agnostic: every instance of the input is a target.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from mmmask.config import configurable
from mmmask.registry import META_ARCH_REGISTRY

from .sam_build import build_sam_model, sam_kwargs_from_cfg
from .sam_prompts import correction_clicks, jitter_boxes, mask_iou, masks_to_boxes, sample_points

__all__ = ["SAMTrainer", "encode_images", "decode_prompts", "mask_losses", "evaluate_clicks",
           "evaluate_automatic"]


def encode_images(sam: Sam, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """Resize (longest side), normalise, pad and encode uint8 images [3, H, W].

    Returns embeddings [B, C, h, w] and the resized (H', W') of each image.
    """
    resize = ResizeLongestSide(sam.image_encoder.img_size)
    inputs, sizes = [], []
    for img in images:
        hwc = img.permute(1, 2, 0).cpu().numpy().astype(np.uint8)  # [3, H, W] -> [H, W, 3]
        resized = torch.as_tensor(resize.apply_image(hwc), device=sam.device)
        sizes.append(tuple(resized.shape[:2]))
        inputs.append(sam.preprocess(resized.permute(2, 0, 1).float()))  # [3, S, S]
    return sam.image_encoder(torch.stack(inputs)), sizes


def decode_prompts(
    sam: Sam,
    embedding: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    coords: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask: bool = False,
    prompt_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode n prompts on one image embedding [1, C, h, w], prompts in original pixels.

    coords [n, P, 2] xy, labels [n, P], boxes [n, 4] XYXY, mask_input [n, 1, 4h, 4w].
    Returns mask logits [n, M, H, W] at ``original_size``, low-res logits [n, M, 4h, 4w] and
    predicted IoU [n, M] (M = 3 with ``multimask`` else 1).
    """
    resize = ResizeLongestSide(sam.image_encoder.img_size)
    points = None
    if coords is not None:
        points = (resize.apply_coords_torch(coords, original_size), labels.int())  # type: ignore
    if boxes is not None:
        boxes = resize.apply_boxes_torch(boxes, original_size)
    with torch.set_grad_enabled(prompt_grad and torch.is_grad_enabled()):
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    low, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    return sam.postprocess_masks(low, input_size, original_size), low, iou


def mask_losses(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal and dice loss [n, M] of mask logits [n, M, H, W] against bool GT [n, H, W]."""
    target = gt[:, None].expand_as(logits).float()
    focal = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="none")
    prob = logits.sigmoid().flatten(2)  # [n, M, H*W]
    target = target.flatten(2)
    dice = 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)
    return focal.flatten(2).mean(-1), dice


@META_ARCH_REGISTRY.register()
class SAMTrainer(nn.Module):
    """Trains a SAM on instance masks with simulated interactive prompts.

    ``forward(batch)`` returns ``{"loss_sam_focal", "loss_sam_dice", "loss_sam_iou"}`` (weighted)
    in train mode; in eval mode one dict per image with ``"instances"``: the masks predicted from
    one centre click per GT instance (``masks`` bool [N, H, W], ``scores`` = predicted IoU,
    ``classes`` copied from the GT since SAM names nothing).
    """

    @configurable
    def __init__(
        self,
        *,
        sam: Sam,
        max_masks_per_image: int = 8,  # GT masks prompted per image and step
        num_correction_clicks: int = 2,  # correction rounds after the first prompt
        box_prompt_prob: float = 0.5,  # first prompt is a box (else one positive point)
        box_jitter: float = 0.1,  # box noise as a fraction of the box side (max 20 px)
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        freeze_image_encoder: bool = False,
        freeze_prompt_encoder: bool = False,
    ) -> None:
        super().__init__()
        if max_masks_per_image < 1 or num_correction_clicks < 0:
            raise ValueError("max_masks_per_image must be >= 1 and num_correction_clicks >= 0")
        if not 0.0 <= box_prompt_prob <= 1.0:
            raise ValueError(f"box_prompt_prob must be in [0, 1]; got {box_prompt_prob}")
        self.sam = sam
        self.max_masks_per_image = max_masks_per_image
        self.num_correction_clicks = num_correction_clicks
        self.box_prompt_prob = box_prompt_prob
        self.box_jitter = box_jitter
        self.weights = {"focal": focal_weight, "dice": dice_weight, "iou": iou_weight}
        self.freeze_image_encoder = freeze_image_encoder
        self.freeze_prompt_encoder = freeze_prompt_encoder
        for module, frozen in ((sam.image_encoder, freeze_image_encoder),
                               (sam.prompt_encoder, freeze_prompt_encoder)):
            for p in module.parameters():
                p.requires_grad_(not frozen)

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.SAM
        return {
            "sam": build_sam_model(**sam_kwargs_from_cfg(cfg)),
            "max_masks_per_image": c.MAX_MASKS_PER_IMAGE,
            "num_correction_clicks": c.NUM_CORRECTION_CLICKS,
            "box_prompt_prob": c.BOX_PROMPT_PROB,
            "box_jitter": c.BOX_JITTER,
            "focal_weight": c.FOCAL_WEIGHT,
            "dice_weight": c.DICE_WEIGHT,
            "iou_weight": c.IOU_WEIGHT,
            "freeze_image_encoder": c.FREEZE_IMAGE_ENCODER,
            "freeze_prompt_encoder": c.FREEZE_PROMPT_ENCODER,
        }

    def _encode(self, batch: list[dict]) -> tuple[torch.Tensor, list]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_image_encoder):
            return encode_images(self.sam, [d["image"] for d in batch])

    def _interactive_losses(
        self, emb: torch.Tensor, gt: torch.Tensor, use_box: bool, input_size: tuple
    ) -> dict[str, torch.Tensor]:
        """Summed (over objects and rounds) losses of n objects gt [n, H, W] on one image."""
        n, size = gt.shape[0], tuple(gt.shape[-2:])
        coords = labels = boxes = mask_input = None
        if use_box:
            boxes = jitter_boxes(masks_to_boxes(gt), size, self.box_jitter)
        else:
            coords = sample_points(gt, "random")[:, None]  # [n, 1, 2]
            labels = torch.ones(n, 1, dtype=torch.int64, device=gt.device)
        sums = {k: gt.new_zeros((), dtype=torch.float32) for k in self.weights}
        rows = torch.arange(n, device=gt.device)
        for r in range(1 + self.num_correction_clicks):
            if r > 0:
                new_c, new_l = correction_clicks(pred, gt, "random")
                new_c, new_l = new_c[:, None], new_l[:, None]  # [n, 1, 2], [n, 1]
                coords = new_c if coords is None else torch.cat([coords, new_c], dim=1)
                labels = new_l if labels is None else torch.cat([labels, new_l], dim=1)
            logits, low, iou_pred = decode_prompts(
                self.sam, emb, input_size, size, coords, labels, boxes, mask_input,
                multimask=(r == 0 and not use_box), prompt_grad=not self.freeze_prompt_encoder,
            )
            focal, dice = mask_losses(logits, gt)  # [n, M] each
            best = (self.weights["focal"] * focal + self.weights["dice"] * dice).argmin(dim=1)
            actual_iou = mask_iou(logits.detach() > 0, gt[:, None].expand_as(logits))  # [n, M]
            sums["focal"] = sums["focal"] + focal[rows, best].sum()
            sums["dice"] = sums["dice"] + dice[rows, best].sum()
            iou_err = F.mse_loss(iou_pred, actual_iou, reduction="none")  # [n, M]
            sums["iou"] = sums["iou"] + iou_err.mean(dim=1).sum()
            mask_input = low[rows, best][:, None].detach()  # [n, 1, 4h, 4w]
            pred = logits[rows, best].detach() > 0  # [n, H, W]
        return sums

    def losses(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        """Weighted SAM losses of a batch of model-input dicts, averaged over objects x rounds."""
        emb, sizes = self._encode(batch)
        totals = {k: emb.new_zeros(()) for k in self.weights}
        count = 0
        for i, d in enumerate(batch):
            masks = (d.get("instances") or {}).get("masks")
            if masks is None:
                continue
            gt = masks.to(self.sam.device).bool()
            gt = gt[gt.flatten(1).any(1)]  # drop empty masks
            gt = gt[torch.randperm(gt.shape[0], device=gt.device)[: self.max_masks_per_image]]
            use_box = torch.rand(gt.shape[0], device=gt.device) < self.box_prompt_prob
            for group in (use_box, ~use_box):
                if group.any():
                    sums = self._interactive_losses(
                        emb[i : i + 1], gt[group], bool(group[0]), sizes[i]
                    )
                    totals = {k: totals[k] + sums[k] for k in totals}
                    count += int(group.sum()) * (1 + self.num_correction_clicks)
        if count == 0:  # no instance in the batch: zero losses that still reach the parameters
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {f"loss_sam_{k}": zero for k in totals}
        return {f"loss_sam_{k}": self.weights[k] * v / count for k, v in totals.items()}

    @torch.no_grad()
    def inference(self, batch: list[dict]) -> list[dict]:
        """Per image, the one-centre-click mask of each GT instance (see the class docstring)."""
        emb, sizes = self._encode(batch)
        outputs = []
        for i, d in enumerate(batch):
            inst = d.get("instances") or {}
            gt = inst.get("masks", torch.zeros(0, *d["image"].shape[-2:], dtype=torch.bool))
            gt = gt.to(self.sam.device).bool()
            n = gt.shape[0]
            if n == 0:
                masks, scores = gt, torch.zeros(0, device=gt.device)
            else:
                coords = sample_points(gt, "center")[:, None]
                labels = torch.ones(n, 1, dtype=torch.int64, device=gt.device)
                logits, _, iou = decode_prompts(
                    self.sam, emb[i : i + 1], sizes[i], tuple(gt.shape[-2:]), coords, labels,
                    multimask=True,
                )
                best = iou.argmax(dim=1)
                masks = logits[torch.arange(n), best] > 0
                scores = iou[torch.arange(n), best]
            classes = inst.get("classes", torch.zeros(n, dtype=torch.long))
            out = {"masks": masks, "scores": scores, "classes": classes.to(masks.device)}
            if (d.get("height"), d.get("width")) not in ((None, None), tuple(masks.shape[-2:])):
                out["masks"] = F.interpolate(
                    masks[None].float(), (d["height"], d["width"]), mode="nearest"
                )[0].bool()
            outputs.append({"instances": out})
        return outputs

    def forward(self, batch: list[dict]) -> Any:
        return self.losses(batch) if self.training else self.inference(batch)


def _as_sample(sample: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(image uint8 [3, H, W], masks bool [N, H, W]) of a model-input dict or an (image, masks)
    pair with the image as [H, W, 3] numpy or [3, H, W] tensor."""
    if isinstance(sample, dict):
        image, masks = sample["image"], (sample.get("instances") or {}).get("masks")
    else:
        image, masks = sample
    image = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]
    if masks is None:
        masks = torch.zeros(0, *image.shape[-2:], dtype=torch.bool)
    if not isinstance(masks, torch.Tensor):
        masks = torch.as_tensor(np.asarray(masks))
    return image, masks.bool()


@torch.no_grad()
def evaluate_clicks(sam: Sam, samples: Iterable[Any], clicks: Sequence[int] = (1, 3)) -> dict:
    """Interactive segmentation quality: mIoU over all GT masks after k simulated clicks.

    Click 1 is the point farthest from the mask border (3 masks, the best predicted IoU is kept);
    each next click is the centre of the larger error region (positive for a miss, negative for
    a false alarm), with all earlier clicks and the previous low-res logits as prompts.

    Args:
        sam: the model (eval mode is set). samples: model-input dicts or (image, masks) pairs.
        clicks: the numbers of clicks to report.
    Returns:
        ``{k: mIoU}`` for each k in ``clicks`` plus ``"num_masks"``.
    """
    if not clicks or min(clicks) < 1:
        raise ValueError(f"clicks must be numbers >= 1; got {clicks}")
    sam.eval()
    ious: dict[int, list[torch.Tensor]] = {k: [] for k in clicks}
    for sample in samples:
        image, gt = _as_sample(sample)
        gt = gt.to(sam.device)
        gt = gt[gt.flatten(1).any(1)]
        if gt.shape[0] == 0:
            continue
        n, size = gt.shape[0], tuple(gt.shape[-2:])
        emb, sizes = encode_images(sam, [image])
        coords = sample_points(gt, "center")[:, None]  # [n, 1, 2]
        labels = torch.ones(n, 1, dtype=torch.int64, device=gt.device)
        mask_input, rows = None, torch.arange(n, device=gt.device)
        for k in range(1, max(clicks) + 1):
            if k > 1:
                c, lab = correction_clicks(pred, gt, "center")
                coords = torch.cat([coords, c[:, None]], dim=1)
                labels = torch.cat([labels, lab[:, None]], dim=1)
            logits, low, iou = decode_prompts(
                sam, emb, sizes[0], size, coords, labels, mask_input=mask_input, multimask=(k == 1)
            )
            best = iou.argmax(dim=1)
            pred = logits[rows, best] > 0  # [n, H, W]
            mask_input = low[rows, best][:, None]
            if k in ious:
                ious[k].append(mask_iou(pred, gt).cpu())
    out: dict = {k: float(torch.cat(v).mean()) if v else float("nan") for k, v in ious.items()}
    out["num_masks"] = sum(len(t) for t in ious[clicks[0]])
    return out


@torch.no_grad()
def evaluate_automatic(generate: Callable[[np.ndarray], list[dict]], samples: Iterable[Any],
                       iou_threshold: float = 0.5) -> dict:
    """Automatic-mode quality: masks per image, the share of ground-truth segments that some mask
    covers with IoU > ``iou_threshold`` (recall) and the share of masks that cover some
    ground-truth segment so (precision). ``generate``: ``SAMMaskGenerator.generate``-like, an
    RGB uint8 [H, W, 3] image -> records with a bool ``segmentation``."""
    counts, recalled, precise = [], [], []
    for sample in samples:
        image, gt = _as_sample(sample)
        records = generate(image.permute(1, 2, 0).cpu().numpy())
        counts.append(len(records))
        if not records or not len(gt):
            recalled += [False] * len(gt)
            precise += [False] * len(records)
            continue
        pred = torch.from_numpy(np.stack([r["segmentation"] for r in records])).bool()
        inter = (pred[:, None] & gt[None]).flatten(2).sum(-1).float()  # [P, G]
        union = (pred[:, None] | gt[None]).flatten(2).sum(-1).float()
        good = inter / union.clamp(min=1) > iou_threshold
        recalled += good.any(0).tolist()
        precise += good.any(1).tolist()
    if not counts:
        raise ValueError("No image to evaluate")
    return {"masks_per_image": float(np.mean(counts)),
            "recall": float(np.mean(recalled)) if recalled else float("nan"),
            "precision": float(np.mean(precise)) if precise else float("nan")}
