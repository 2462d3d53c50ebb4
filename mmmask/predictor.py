"""Predictor layer: load a config and weights once, then segment images for any vocabulary.

The CLI, the demo and ``tools/eval.py`` call this layer only. Text embeddings are cached by the
backbone per prompt, so typing the same vocabulary again costs nothing; the image features of
the last image are reused when only the vocabulary changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmmask.config import CfgNode, load_cfg
from mmmask.data.image_io import as_rgb_array
from mmmask.data.vocab import Vocabulary, parse_vocab
from mmmask.utils.weights import SHIPPED_DIR, load_matching, load_state_dict_file, resolve_weights

__all__ = ["SegmentationPredictor", "SegmentationResult", "default_config_file", "TASKS"]

TASKS = ("semantic", "panoptic", "instance")


def default_config_file() -> str:
    """The config of the shipped Shapes-OV model (inside the package)."""
    return str(SHIPPED_DIR / "shapes_ovseg.yaml")


def _locked(method):
    """Run a predictor method under the predictor's lock: the model holds the current
    vocabulary and SAM the current image, so concurrent callers (a demo server) take turns."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class SegmentationResult:
    """Segments of one image. ``segments[i]["mask"]`` is an HxW bool array."""

    height: int
    width: int
    labels: list[str]
    task: str
    segments: list[dict] = field(default_factory=list)
    semantic: np.ndarray | None = None  # HxW int label ids (-1 = none) for the semantic task

    def to_json(self, image: str = "") -> dict:
        """The DESIGN.md JSON: segments with COCO RLE (pycocotools) and per-label semantic RLE."""
        from pycocotools import mask as mask_utils

        def rle(m: np.ndarray) -> dict:
            r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("utf-8")}

        segs = []
        for s in self.segments:
            m = s["mask"]
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1)] if len(xs) else [0, 0, 0, 0]
            segs.append({"id": int(s["id"]), "label": s["label"], "score": round(float(s["score"]), 4),
                         "area": int(m.sum()), "bbox": bbox, "rle": rle(m)})
        out = {"image": image, "height": self.height, "width": self.width,
               "vocabulary": list(self.labels), "segments": segs}
        if self.task == "semantic" and self.semantic is not None:
            out["semantic"] = {self.labels[c]: rle(self.semantic == c)
                               for c in np.unique(self.semantic) if c >= 0}
        return out

    def overlay(self, image: np.ndarray) -> np.ndarray:
        from mmmask.utils.visualize import overlay_segments

        return overlay_segments(image, [s["mask"] for s in self.segments],
                                [s["label"] for s in self.segments])


class SegmentationPredictor:
    """Open-vocabulary segmentation of numpy images.

    >>> p = SegmentationPredictor.from_files()          # the shipped Shapes-OV model
    >>> r = p.predict(image, vocab="red star,sky", task="semantic")
    """

    def __init__(self, cfg: CfgNode, device: str | None = None):
        from mmmask.modeling import build_model

        self.cfg = cfg
        self.device = pick_device(device or cfg.MODEL.DEVICE)
        self.model = build_model(cfg).to(self.device).eval()
        if cfg.MODEL.WEIGHTS:
            state = load_state_dict_file(cfg.MODEL.WEIGHTS, config_key="MODEL.WEIGHTS")
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            source = resolve_weights(cfg.MODEL.WEIGHTS)
            _, unexpected = load_matching(self.model, state, source=source, strict=False)
            if len(unexpected) * 2 > len(state):  # mostly another model's tensors: refuse
                raise ValueError(
                    f"{source} does not fit the model ({len(unexpected)} of {len(state)} tensors "
                    f"unknown, e.g. {unexpected[:3]}); wrong architecture or config?")
            self.model.backbone.text.clear_cache()
        if cfg.MODEL.GENERATOR_WEIGHTS:  # another run's generator under these classifiers
            from mmmask.engine.checkpoint import load_model_part

            load_model_part(self.model, "mask_generator.", cfg.MODEL.GENERATOR_WEIGHTS,
                            "MODEL.GENERATOR_WEIGHTS", strict=True)
        self.default_vocabulary = self.model.vocabulary
        self.default_is_thing = list(self.model.is_thing)
        self._sam = None
        self._lock = threading.RLock()

    @classmethod
    def from_files(cls, config_file: str | None = None, weights: str | None = None,
                   opts: list | None = None, device: str | None = None) -> "SegmentationPredictor":
        """Config file (default: the shipped model's), optional weights and ``KEY VALUE`` opts."""
        config_file = config_file or default_config_file()
        opts = list(opts or [])
        if weights:
            opts += ["MODEL.WEIGHTS", weights]
        cfg = load_cfg(config_file, opts)
        return cls(cfg, device=device)

    # -- vocabulary --------------------------------------------------------------------------
    def resolve_vocabulary(self, vocab: Vocabulary | str | None) -> tuple[Vocabulary, list[bool]]:
        if vocab is None:
            return self.default_vocabulary, self.default_is_thing
        if isinstance(vocab, str):
            vocab = parse_vocab(vocab)
        # Classes known to the default vocabulary keep their thing/stuff flag.
        known = {c[0].lower(): t for c, t in zip(self.default_vocabulary.classes, self.default_is_thing)}
        return vocab, [known.get(c[0].lower(), True) for c in vocab.classes]

    # -- images ------------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("Expected an HxWx3 uint8 RGB image (see mmmask.data.image_io.read_image)")
        h, w = image.shape[:2]
        if h < 8 or w < 8:
            raise ValueError(f"Image is {w}x{h} pixels; at least 8x8 is needed.")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        target = self.cfg.INPUT.TEST_SIZE
        scale = target / min(h, w) if target > 0 else 1.0
        scale = min(scale, self.cfg.INPUT.MAX_SIDE / max(h, w))
        if abs(scale - 1.0) > 1e-3:
            size = (max(8, round(h * scale)), max(8, round(w * scale)))
            x = F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x

    def as_model(self, generator: str = "pmp", cache_masks: bool = False) -> torch.nn.Module:
        """A batch -> outputs module for evaluation: the model itself, or SAM masks named by it.

        ``cache_masks`` (SAM only) keeps each image's SAM masks, keyed by its pixels, so that
        evaluating several tasks or vocabularies on one dataset runs SAM once per image.
        """
        if generator == "pmp":
            return self.model
        if generator == "sam":
            return SamNamedSegmentor(self, cache_masks=cache_masks)
        raise ValueError(f"Unknown generator {generator!r}; valid: pmp, sam")

    def sam(self):
        """The SAM mask generator of this config (built on first use)."""
        if self._sam is None:
            from mmmask.registry import MASK_GENERATOR_REGISTRY

            self._sam = MASK_GENERATOR_REGISTRY.get("SAM")(self.cfg).to(self.device).eval()
        return self._sam

    @_locked
    @torch.no_grad()
    def predict(self, image: np.ndarray, vocab: Vocabulary | str | None = None,
                task: str = "semantic", generator: str = "pmp", score_threshold: float = 0.0,
                sam_masks: np.ndarray | None = None) -> SegmentationResult:
        """Segment ``image`` (HxWx3 uint8) against ``vocab``.

        ``generator``: "pmp" (the model's own proposals) or "sam" (SAM automatic masks named by
        the classifier); ``sam_masks`` (Q x H x W bool) names given masks instead.
        """
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; valid: {', '.join(TASKS)}")
        if generator not in ("pmp", "sam"):
            raise ValueError(f"Unknown generator {generator!r}; valid: pmp, sam")
        image = as_rgb_array(image)  # grayscale / RGBA / 16-bit / float arrays -> HxWx3 uint8
        vocabulary, is_thing = self.resolve_vocabulary(vocab)
        self.model.set_vocabulary(vocabulary, is_thing)
        h, w = image.shape[:2]
        x = self._prepare(image)
        batch = [{"image": x, "height": h, "width": w}]
        external = scores = None
        if sam_masks is not None:
            external = self._pad_masks(sam_masks, x.shape[-2:]).to(self.device)
        elif generator == "sam":
            external, scores = self._sam_inputs(image, x.shape[-2:])
        tasks = (task,)
        images, sizes = self.model._images(batch)
        probs, objectness, mask_logits = self.model.predict_masks(
            images, external, scores, image_sizes=sizes, ensemble=self.model.ensemble_for(task))
        out = self.model.postprocess(probs[0], objectness[0], mask_logits[0], sizes[0],
                                     tuple(images.shape[-2:]), (h, w), tasks=tasks,
                                     rank_by_objectness=scores is not None)
        return self._to_result(out, vocabulary, task, h, w, score_threshold)

    @_locked
    @torch.no_grad()
    def encode_text(self, vocab: Vocabulary | str | None = None,
                    crops: bool = False) -> tuple[np.ndarray, list[str]]:
        """The classifier's text side: one unit-norm embedding float [C, D] per class of
        ``vocab`` (the normalised mean over its synonyms, each a prompt-template ensemble), and
        the C display labels. Cosines between rows show which names CLIP can tell apart. With
        ``crops``, the names as the crop classifier sees them (its own text tower, if any)."""
        from mmmask.modeling.clip.text import synonym_index

        vocabulary, is_thing = self.resolve_vocabulary(vocab)
        self.model.set_vocabulary(vocabulary, is_thing)
        syn = self.model.text_embeddings()
        crop = getattr(self.model, "crop_classifier", None)
        if crops and crop is not None:
            syn = crop.text_embeddings(vocabulary, syn)
        syn = F.normalize(syn.float(), dim=-1)
        index = synonym_index(vocabulary).to(syn.device)
        classes = syn.new_zeros(len(vocabulary), syn.shape[1]).index_add_(0, index, syn)
        return F.normalize(classes, dim=-1).cpu().numpy(), vocabulary.labels

    @_locked
    @torch.no_grad()
    def classify_masks(self, image: np.ndarray, masks: np.ndarray,
                       vocab: Vocabulary | str | None = None) -> tuple[np.ndarray, list[str]]:
        """Name given masks: class probabilities float [Q, C] of ``masks`` (Q x H x W bool, at
        the image size) against ``vocab``, and the C display labels."""
        masks = np.asarray(masks, bool)
        if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
            raise ValueError(f"masks must be Q x H x W = Q x {image.shape[0]} x {image.shape[1]}; "
                             f"got {masks.shape}")
        vocabulary, is_thing = self.resolve_vocabulary(vocab)
        self.model.set_vocabulary(vocabulary, is_thing)
        x = self._prepare(image)
        images, _ = self.model._images([{"image": x, "height": image.shape[0],
                                         "width": image.shape[1]}])
        external = self._pad_masks(masks, x.shape[-2:]).to(self.device)
        probs, _, _ = self.model.predict_masks(images, external)
        return probs[0, : len(masks)].float().cpu().numpy(), vocabulary.labels

    @_locked
    @torch.no_grad()
    def click(self, image: np.ndarray, points=None, point_labels=None, box=None,
              vocab: Vocabulary | str | None = None, top_k: int = 3) -> SegmentationResult:
        """Prompted SAM, named by the classifier: one segment for clicks and/or a box.

        ``points`` [P, 2] xy pixels with ``point_labels`` [P] (1 positive, 0 negative); ``box``
        XYXY pixels. SAM's best mask (by predicted IoU; three candidates for a single click)
        becomes the segment; its ``label``/``score`` are the top class, ``candidates`` the
        ``top_k`` (label, probability) pairs and ``sam_score`` SAM's predicted IoU. An empty
        mask gives a result without segments.
        """
        points = [] if points is None else [list(map(float, p)) for p in points]
        if not points and box is None:
            raise ValueError("No prompt: click at least one point or draw a box on the image")
        if points and (point_labels is None or len(point_labels) != len(points)):
            raise ValueError("point_labels must give one label (1 positive, 0 negative) per point")
        coords = np.asarray(points, np.float32)[None] if points else None  # (1, P, 2)
        labels = np.asarray(point_labels, np.int64)[None] if points else None  # (1, P)
        boxes = None if box is None else np.asarray(box, np.float32).reshape(1, 4)  # (1, 4)
        pred = self.sam().predict(image, point_coords=coords, point_labels=labels, boxes=boxes,
                                  multimask_output=box is None and len(points) == 1)
        best = int(pred.iou_preds[0].argmax())
        mask = pred.masks[0, best].cpu().numpy().astype(bool)  # (H, W)
        h, w = image.shape[:2]
        vocabulary, _ = self.resolve_vocabulary(vocab)
        if not mask.any():
            return SegmentationResult(height=h, width=w, labels=vocabulary.labels,
                                      task="instance")
        probs, names = self.classify_masks(image, mask[None], vocabulary)
        order = np.argsort(-probs[0])[: max(1, top_k)]
        c = int(order[0])
        segment = {"id": 1, "label": names[c], "class_id": c, "score": float(probs[0, c]),
                   "mask": mask, "sam_score": float(pred.iou_preds[0, best]),
                   "candidates": [(names[i], float(probs[0, i])) for i in order]}
        return SegmentationResult(height=h, width=w, labels=names, task="instance",
                                  segments=[segment])

    def _sam_inputs(self, image: np.ndarray, size: tuple[int, int]):
        """SAM's automatic masks as classifier input: Tensor[1,Q,h',w'] on the padded frame of
        an image resized to ``size``, and their predicted IoU Tensor[1,Q] (None without masks:
        one empty placeholder mask is classified then)."""
        records = self.sam().generate(image)
        masks = (np.stack([r["segmentation"] for r in records]) if records
                 else np.zeros((0, *image.shape[:2]), bool))
        external = self._pad_masks(masks, size).to(self.device)
        if not records:
            return external, None
        scores = torch.tensor([[r["predicted_iou"] for r in records]], dtype=torch.float32)
        return external, scores.to(self.device)

    def _pad_masks(self, masks: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """Q x H x W bool masks (original image size) -> Tensor[1,Q,h',w'] on the padded frame."""
        d = self.model.size_divisibility
        ph, pw = (size[0] + d - 1) // d * d, (size[1] + d - 1) // d * d
        m = torch.from_numpy(np.asarray(masks, bool)).float()
        if m.shape[0] == 0:
            m = torch.zeros(1, *m.shape[1:])
        m = F.interpolate(m[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        out = torch.zeros(1, m.shape[0], ph // 4, pw // 4)
        small = F.interpolate(m[None], size=(size[0] // 4 or 1, size[1] // 4 or 1), mode="bilinear",
                              align_corners=False)[0]
        out[0, :, : small.shape[1], : small.shape[2]] = small
        return out

    def _to_result(self, out: dict, vocab: Vocabulary, task: str, h: int, w: int,
                   score_threshold: float) -> SegmentationResult:
        labels = vocab.labels
        segments: list[dict] = []
        semantic = None
        if task == "semantic":
            scores = out["sem_seg"]  # (C, H, W), sums over masks: normalised per pixel to [0, 1]
            scores = scores / scores.sum(dim=0, keepdim=True).clamp_min(1e-6)
            best, ids = scores.max(dim=0)
            ids = ids.cpu().numpy()
            valid = (best > score_threshold).cpu().numpy()
            semantic = np.where(valid, ids, -1)
            for c in np.unique(semantic):
                if c < 0:
                    continue
                m = semantic == c
                segments.append({"id": len(segments) + 1, "label": labels[c], "class_id": int(c),
                                 "score": float(best.cpu().numpy()[m].mean()), "mask": m})
        elif task == "panoptic":
            ids, infos = out["panoptic_seg"]
            ids = ids.cpu().numpy()
            for s in infos:
                if s["score"] < score_threshold:
                    continue
                segments.append({"id": len(segments) + 1, "label": labels[s["category_id"]],
                                 "class_id": s["category_id"], "score": s["score"],
                                 "mask": ids == s["id"]})
        else:
            inst = out["instances"]
            for m, sc, c in zip(inst["masks"].cpu().numpy(), inst["scores"].tolist(),
                                inst["classes"].tolist()):
                if sc < max(score_threshold, 1e-3) or not m.any():
                    continue
                segments.append({"id": len(segments) + 1, "label": labels[c], "class_id": c,
                                 "score": sc, "mask": m})
        return SegmentationResult(height=h, width=w, labels=labels, task=task, segments=segments,
                                  semantic=semantic)


class SamNamedSegmentor(torch.nn.Module):
    """SAM automatic masks named by the model's classifier; same inputs/outputs as the model.

    With ``cache_masks`` the SAM masks and scores of every image seen are kept (keyed by a
    digest of the image's pixels): SAM does not depend on the vocabulary or the task, so later
    passes over the same images only rerun the classifier.
    """

    def __init__(self, predictor: SegmentationPredictor, cache_masks: bool = False):
        super().__init__()
        self.predictor = predictor
        self.model = predictor.model
        self.cache: dict[str, tuple] | None = {} if cache_masks else None

    def _masks(self, image: torch.Tensor):
        np_image = image.permute(1, 2, 0).cpu().numpy()
        if self.cache is None:
            return self.predictor._sam_inputs(np_image, image.shape[-2:])
        key = hashlib.sha1(np.ascontiguousarray(np_image).tobytes()).hexdigest()
        key += str(tuple(np_image.shape))
        if key not in self.cache:
            self.cache[key] = self.predictor._sam_inputs(np_image, image.shape[-2:])
        return self.cache[key]

    def set_vocabulary(self, vocab, is_thing=None):
        self.model.set_vocabulary(vocab, is_thing)

    @torch.no_grad()
    def forward(self, batch: list[dict]) -> list[dict]:
        outputs = []
        for item in batch:
            external, scores = self._masks(item["image"])
            outputs += self.model([item], external_masks=external, external_scores=scores)
        return outputs


def write_result(result: SegmentationResult, image: np.ndarray, image_path: str, out_dir: str) -> tuple[str, str]:
    """Write ``STEM.png`` (overlay with legend) and ``STEM.json`` into ``out_dir`` atomically."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    stem = Path(image_path).stem
    png, js = os.path.join(out_dir, f"{stem}.png"), os.path.join(out_dir, f"{stem}.json")
    data = json.dumps(result.to_json(image=os.path.basename(image_path)), ensure_ascii=False)
    overlay = Image.fromarray(result.overlay(image))
    tmp_png, tmp_js = f"{png}.tmp", f"{js}.tmp"
    overlay.save(tmp_png, format="PNG")
    with open(tmp_js, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp_png, png)
    os.replace(tmp_js, js)
    return png, js
