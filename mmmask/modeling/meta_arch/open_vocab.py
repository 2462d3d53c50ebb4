"""OpenVocabSegmentor: CLIP backbone + mask generator + mask classifier, composed by passing in.

One image pass: the frozen CLIP trunk runs once; its multi-scale maps feed the mask generator and
its dense map feeds the mask classifier. Training trains the generator, the classifier or both
(the staged recipe in ``configs/shapes/``); inference returns semantic, panoptic and instance
results for any vocabulary.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmmask.config import configurable
from mmmask.data.annotations import IGNORE as IGNORE_LABEL
from mmmask.data.catalog import DatasetCatalog
from mmmask.data.mappers import CaptionMapper
from mmmask.data.vocab import Vocabulary
from mmmask.registry import (BACKBONE_REGISTRY, MASK_CLASSIFIER_REGISTRY, MASK_GENERATOR_REGISTRY,
                             META_ARCH_REGISTRY)

from ..clip.text import TextTower, synonym_index
from ..iou_matching import build_adapter_targets, collate_adapter_targets, mask_iou
from ..mask_crop import resize_mask_probs
from ..mask_refine import MaskRefiner
from ..postprocess import (combine_class_probs, instance_inference, leftover_masks,
                           leftover_tiles, neck_parts, split_by_tile_names,
                           max_over_synonyms, panoptic_inference, resize_masks,
                           semantic_inference)

__all__ = ["CROP_MASK_SIZES", "OpenVocabSegmentor", "default_vocabulary"]

# The frame of the masks a trained crop tower learns from: the generator's mask features
# ("features", 1/4 of the image) or the image itself ("image": ground-truth masks at full
# resolution, predicted ones resized to it).
CROP_MASK_SIZES = ("features", "image")


def default_vocabulary(dataset_name: str, seen_only: bool = False) -> tuple[Vocabulary, list[bool]]:
    """The vocabulary of a catalog dataset and its thing flags (``seen_only``: training classes)."""
    from mmmask.data.catalog import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    seen = getattr(meta, "is_seen", None)
    vocab = Vocabulary.from_names(meta.classes, seen=seen)
    is_thing = list(getattr(meta, "is_thing", [True] * len(vocab)))
    return vocab, is_thing


def _crop_towers_follow_backbone(model: nn.Module, incompatible) -> None:
    """Load hook: a MaskCrop image (text) tower absent from the loaded weights (e.g. a checkpoint
    of an earlier stage) restarts as a copy of the backbone's image (text) tower as just loaded,
    rather than keeping whatever the backbone held when the model was built."""
    missing = set(incompatible.missing_keys)
    for prefix, clf in (("classifier.", model.classifier),
                        ("crop_classifier.", model.crop_classifier)):
        tower = getattr(clf, "tower", None)
        if tower is not None and _all_missing(missing, f"{prefix}tower.", tower):
            with torch.no_grad():
                tower.load_state_dict(model.backbone.clip.visual.state_dict())
        text = getattr(clf, "text_tower", None)
        if text is not None and _all_missing(missing, f"{prefix}text_tower.", text):
            text.copy_from_encoder()


def _all_missing(missing: set, prefix: str, module: nn.Module) -> bool:
    names = [prefix + n for n in module.state_dict()]
    return bool(names) and all(n in missing for n in names)


@META_ARCH_REGISTRY.register()
class OpenVocabSegmentor(nn.Module):
    """Open-vocabulary segmentation model.

    ``forward(batch)`` takes a list of model-input dicts (``image`` uint8 [3,H,W], ``height``,
    ``width`` and for training ``instances``/``sem_seg``); train mode returns a loss dict, eval
    mode one dict per image with ``sem_seg`` [C,H,W], ``panoptic_seg`` and ``instances``.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, mask_generator: nn.Module, classifier: nn.Module,
                 vocabulary: Vocabulary, is_thing: list[bool], train_generator: bool = True,
                 train_classifier: bool = False, adapter_masks: str = "gt",
                 adapter_iou_threshold: float = 0.7, adapter_num_pred: int = 16,
                 object_mask_threshold: float = 0.5, overlap_threshold: float = 0.8,
                 detections_per_image: int = 100, max_masks_classified: int = 0,
                 ensemble: bool = False, alpha: float = 0.4, beta: float = 0.8,
                 ensemble_tasks: tuple[str, ...] = ("semantic", "panoptic", "instance"),
                 crop_classifier: nn.Module | None = None, crop_weight: float = 0.0,
                 train_crop: bool = False, crop_mask_size: str = "features",
                 leftover_regions: int = 0, leftover_min_area: float = 0.01,
                 leftover_split: tuple[int, int, float, float, bool] = (0, 2, 0.5, 0.25, False),
                 neck_split: tuple[float, float] | None = None,
                 mask_refiner: MaskRefiner | None = None,
                 self_train: tuple[float, float, float] | None = None,
                 crop_captions: tuple[Sequence[dict], Callable, int, float] | None = None,
                 tasks: tuple[str, ...] = ("semantic", "panoptic", "instance"),
                 size_divisibility: int = 32):
        super().__init__()
        self.backbone = backbone
        self.mask_generator = mask_generator
        self.classifier = classifier
        self.train_generator = train_generator
        self.train_classifier = train_classifier
        self.adapter_masks = adapter_masks
        self.adapter_iou_threshold = adapter_iou_threshold
        self.adapter_num_pred = adapter_num_pred
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.detections_per_image = detections_per_image
        self.max_masks_classified = max_masks_classified
        self.ensemble, self.alpha, self.beta = ensemble, alpha, beta
        unknown = sorted(set(ensemble_tasks) - {"semantic", "panoptic", "instance"})
        if unknown:
            raise ValueError(f"MODEL.ENSEMBLE.TASKS: unknown task(s) {unknown}; valid: semantic, "
                             "panoptic, instance")
        self.ensemble_tasks = tuple(ensemble_tasks)
        if not 0 <= crop_weight <= 1:
            raise ValueError(f"MODEL.MASK_CROP.FUSION_WEIGHT must lie in [0, 1]; got {crop_weight}")
        if crop_weight > 0 and crop_classifier is None:
            raise ValueError("A crop fusion weight needs a crop classifier")
        # Inference-only second opinion (MaskCrop) fused with the classifier's distribution.
        self.crop_classifier = crop_classifier if crop_weight > 0 else None
        self.crop_weight = float(crop_weight)
        # Training the crop tower needs one (checked when training starts, so that evaluating a
        # training config with the crops switched off still works).
        self._crop_train_requested = bool(train_crop)
        self.train_crop = self._crop_train_requested and any(
            getattr(self.crop_classifier, name, None) is not None
            for name in ("tower", "text_tower"))
        if crop_mask_size not in CROP_MASK_SIZES:
            raise ValueError(f"MODEL.MASK_CROP.TRAIN_MASK_SIZE must be one of {CROP_MASK_SIZES}; "
                             f"got {crop_mask_size!r}")
        self.crop_mask_size = crop_mask_size
        # While the crops train: (caption records, their mapper, pairs per step, loss weight).
        if crop_captions is not None:
            records, _, n, weight = crop_captions
            if int(n) < 2 or float(weight) < 0:
                raise ValueError("MODEL.MASK_CROP.CAPTIONS.BATCH_SIZE must be >= 2 (a contrastive "
                                 f"batch) and WEIGHT >= 0; got {n}, {weight}")
            if len(records) == 0:
                raise ValueError("MODEL.MASK_CROP.CAPTIONS.DATASET has no image-caption pairs")
        self.crop_captions = crop_captions
        self.register_load_state_dict_post_hook(_crop_towers_follow_backbone)
        if leftover_regions < 0 or not 0 <= leftover_min_area <= 1:
            raise ValueError("MODEL.TEST.LEFTOVER_REGIONS must be >= 0 and LEFTOVER_MIN_AREA in "
                             f"[0, 1]; got {leftover_regions}, {leftover_min_area}")
        self.leftover_regions, self.leftover_min_area = int(leftover_regions), leftover_min_area
        grid, parts, fill, share, external = leftover_split
        if int(grid) < 0 or int(grid) == 1 or int(parts) < 1 or not 0 < float(fill) <= 1 \
                or not 0 <= share <= 1:
            raise ValueError("MODEL.TEST.LEFTOVER_SPLIT: GRID must be 0 (off) or >= 2, PARTS >= 1, "
                             f"MIN_FILL in (0, 1] and MIN_SHARE in [0, 1]; got {grid}, {parts}, "
                             f"{fill}, {share}")
        # Leftover regions cut where the names of their tiles change: (grid, parts, min fill,
        # min share of the tiles per name, also after external masks).
        self.leftover_split = (int(grid), int(parts), float(fill), float(share), bool(external))
        if neck_split is not None and not (0 < float(neck_split[0]) < 1
                                           and 0 <= float(neck_split[1]) < 1):
            raise ValueError("MODEL.TEST.NECK_SPLIT: DEPTH must lie in (0, 1) and MIN_CORE in "
                             f"[0, 1); got {neck_split[0]}, {neck_split[1]}")
        # Generator masks cut at narrow necks where the parts take different names: (depth,
        # min core share of the frame), or None.
        self.neck_split = None if neck_split is None else tuple(float(v) for v in neck_split)
        # Inference: the generator's masks refined at the image's resolution (guided filter).
        self.mask_refiner = mask_refiner
        self.tasks = tuple(tasks)
        self.size_divisibility = size_divisibility
        # The dataset's vocabulary (the inference default) and the training vocabulary: only the
        # classes seen in training, so that unseen names never act as negatives; with
        # self-training (threshold, min ignored share, min area) the whole vocabulary, its
        # unseen classes named by pseudo-labels.
        self.dataset_vocabulary, self.dataset_is_thing = vocabulary, list(is_thing)
        seen = list(vocabulary.seen) if vocabulary.seen is not None else [True] * len(vocabulary)
        self.self_train = None
        if self_train is not None:
            threshold, min_ignored, min_area = (float(v) for v in self_train)
            if all(seen):
                raise ValueError("MODEL.SELF_TRAIN needs a dataset vocabulary with classes "
                                 "unseen in training (its pseudo-labels name only those)")
            if not (0 <= threshold <= 1 and 0 <= min_ignored <= 1 and 0 <= min_area <= 1):
                raise ValueError("MODEL.SELF_TRAIN.THRESHOLD, MIN_IGNORED and MIN_AREA must lie "
                                 f"in [0, 1]; got {threshold}, {min_ignored}, {min_area}")
            self.self_train = (threshold, min_ignored, min_area)
        keep = [i for i, s in enumerate(seen) if s or self.self_train]
        self.train_vocabulary = (vocabulary if self.self_train else Vocabulary(
            tuple(vocabulary.classes[i] for i in keep), seen=(True,) * len(keep)))
        self._train_is_thing = [is_thing[i] for i in keep]
        class_map = torch.full((len(vocabulary),), -1, dtype=torch.long)
        class_map[keep] = torch.arange(len(keep))
        self.register_buffer("_train_class_map", class_map, persistent=False)
        self.set_vocabulary(vocabulary, is_thing)
        for module, on in ((mask_generator, train_generator), (classifier, train_classifier),
                           (self.crop_classifier, self.train_crop)):
            for p in module.parameters() if module is not None else ():
                p.requires_grad_(on)

    @classmethod
    def from_config(cls, cfg):
        backbone = BACKBONE_REGISTRY.get("CLIPBackbone")(cfg)
        name = cfg.MODEL.MASK_GENERATOR.NAME
        generator_cls = MASK_GENERATOR_REGISTRY.get(name)
        if not getattr(generator_cls, "on_clip_features", True):
            raise ValueError(
                f"MODEL.MASK_GENERATOR.NAME {name!r} does not run on the segmentor's CLIP "
                f"features, so it cannot be its own generator: keep \"PMP\" there and add {name}'s "
                f"masks at inference (`--generator {name.lower()}` in the tools and CLI, "
                f"SegmentationPredictor.as_model({name.lower()!r}))")
        generator = generator_cls(cfg, input_shape=backbone.output_shape(),
                                  embed_dim=backbone.embed_dim)
        own_tower = bool(cfg.MODEL.MASK_CROP.OWN_TOWER)
        crop_size = cfg.MODEL.MASK_CROP.CROP_SIZE
        if backbone.is_vit and crop_size and crop_size != cfg.MODEL.CLIP.IMAGE_SIZE:
            raise ValueError(f"MODEL.MASK_CROP.CROP_SIZE {crop_size}: a ViT image tower takes "
                             f"its training size only (MODEL.CLIP.IMAGE_SIZE "
                             f"{cfg.MODEL.CLIP.IMAGE_SIZE}); set 0")

        own_text = bool(cfg.MODEL.MASK_CROP.OWN_TEXT_TOWER)

        def towers():  # MaskCrop's own copies of CLIP's image and text towers
            return {"tower": copy.deepcopy(backbone.clip.visual) if own_tower else None,
                    "text_tower": TextTower(backbone.text) if own_text else None}

        extra = towers() if cfg.MODEL.MASK_CLASSIFIER.NAME == "MaskCrop" else {}
        classifier = MASK_CLASSIFIER_REGISTRY.get(cfg.MODEL.MASK_CLASSIFIER.NAME)(
            cfg, dense_dim=backbone.dense_dim, embed_dim=backbone.embed_dim, **extra)
        crop_weight = float(cfg.MODEL.MASK_CROP.FUSION_WEIGHT)
        crop = None
        if crop_weight > 0:
            if cfg.MODEL.MASK_CLASSIFIER.NAME == "MaskCrop":
                raise ValueError("MODEL.MASK_CROP.FUSION_WEIGHT fuses MaskCrop into another "
                                 "classifier; the classifier is MaskCrop already")
            # Without its own towers the fusion copy has nothing to save: fixed logit scale.
            crop = MASK_CLASSIFIER_REGISTRY.get("MaskCrop")(
                cfg, dense_dim=backbone.dense_dim, embed_dim=backbone.embed_dim,
                learnable=own_tower or own_text, **towers())
        from mmmask.data.builtin import register_builtin

        register_builtin(cfg)  # Shapes-OV sizes and DATASETS.ROOTS
        captions = cfg.MODEL.MASK_CROP.CAPTIONS
        crop_captions = None
        if captions.DATASET and cfg.MODEL.MASK_CROP.TRAIN:
            crop_captions = (DatasetCatalog.get(captions.DATASET),
                             CaptionMapper(cfg, is_train=True), captions.BATCH_SIZE,
                             captions.WEIGHT)
        name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else cfg.DATASETS.TEST[0]
        vocab, is_thing = default_vocabulary(name)
        t = cfg.MODEL.TEST
        return {
            "backbone": backbone, "mask_generator": generator, "classifier": classifier,
            "vocabulary": vocab, "is_thing": is_thing,
            "train_generator": cfg.MODEL.TRAIN_GENERATOR,
            "train_classifier": cfg.MODEL.TRAIN_CLASSIFIER,
            "adapter_masks": cfg.MODEL.MASK_ADAPTER.TRAIN_MASKS,
            "adapter_iou_threshold": cfg.MODEL.MASK_ADAPTER.IOU_THRESHOLD,
            "adapter_num_pred": cfg.MODEL.MASK_ADAPTER.NUM_PRED_MASKS,
            "object_mask_threshold": t.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": t.OVERLAP_THRESHOLD,
            "detections_per_image": t.DETECTIONS_PER_IMAGE,
            "max_masks_classified": t.MAX_MASKS_CLASSIFIED,
            "ensemble": cfg.MODEL.ENSEMBLE.ENABLED, "alpha": cfg.MODEL.ENSEMBLE.ALPHA,
            "beta": cfg.MODEL.ENSEMBLE.BETA, "ensemble_tasks": tuple(cfg.MODEL.ENSEMBLE.TASKS),
            "crop_classifier": crop, "crop_weight": crop_weight,
            "train_crop": cfg.MODEL.MASK_CROP.TRAIN,
            "crop_mask_size": cfg.MODEL.MASK_CROP.TRAIN_MASK_SIZE,
            "leftover_regions": t.LEFTOVER_REGIONS, "leftover_min_area": t.LEFTOVER_MIN_AREA,
            "neck_split": ((t.NECK_SPLIT.DEPTH, t.NECK_SPLIT.MIN_CORE)
                           if t.NECK_SPLIT.ENABLED else None),
            "leftover_split": (t.LEFTOVER_SPLIT.GRID, t.LEFTOVER_SPLIT.PARTS,
                               t.LEFTOVER_SPLIT.MIN_FILL, t.LEFTOVER_SPLIT.MIN_SHARE,
                               t.LEFTOVER_SPLIT.EXTERNAL_MASKS),
            "mask_refiner": MaskRefiner.from_config(cfg),
            "self_train": ((cfg.MODEL.SELF_TRAIN.THRESHOLD, cfg.MODEL.SELF_TRAIN.MIN_IGNORED,
                            cfg.MODEL.SELF_TRAIN.MIN_AREA)
                           if cfg.MODEL.SELF_TRAIN.ENABLED else None),
            "crop_captions": crop_captions,
        }

    # -- vocabulary --------------------------------------------------------------------------
    def set_vocabulary(self, vocab: Vocabulary, is_thing: list[bool] | None = None) -> None:
        """Use ``vocab`` for inference; classes seen in training are found by their labels."""
        self.vocabulary = vocab
        if is_thing is None:  # classes of the training vocabulary keep their flag; others: thing
            known = {c[0].lower(): t for c, t in zip(self.dataset_vocabulary.classes,
                                                     self.dataset_is_thing)}
            is_thing = [known.get(c[0].lower(), True) for c in vocab.classes]
        self.is_thing = list(is_thing)
        if len(self.is_thing) != len(vocab):
            raise ValueError("is_thing needs one flag per vocabulary class")
        self._syn_index = synonym_index(vocab)
        train = self.train_vocabulary
        train_seen = train.seen or (True,) * len(train)
        seen_labels = {c[0].lower() for c, s in zip(train.classes, train_seen) if s}
        self._seen = torch.tensor([c[0].lower() in seen_labels for c in vocab.classes])

    def text_embeddings(self) -> torch.Tensor:
        """Tensor[S, D_emb] for the current vocabulary (cached by the backbone per prompt)."""
        return self.backbone.encode_vocabulary(self.vocabulary).to(self.device)

    @property
    def device(self) -> torch.device:
        return self.backbone.pixel_mean.device

    # -- shared steps ------------------------------------------------------------------------
    def _images(self, batch: list[dict]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and pad to a common size divisible by ``size_divisibility``."""
        sizes = [tuple(d["image"].shape[-2:]) for d in batch]
        d = self.size_divisibility
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        h, w = (h + d - 1) // d * d, (w + d - 1) // d * d
        out = torch.zeros(len(batch), 3, h, w, device=self.device)
        for i, item in enumerate(batch):
            img = self.backbone.normalize(item["image"].to(self.device))
            out[i, :, : img.shape[1], : img.shape[2]] = img
        return out, sizes

    def _refine(self, mask_logits: torch.Tensor, images: torch.Tensor,
                sizes: list[tuple[int, int]] | None) -> torch.Tensor:
        """``mask_refiner`` on a padded, normalised batch (its colours brought back to [0, 1])."""
        pixels = (images * self.backbone.pixel_std + self.backbone.pixel_mean) / 255.0
        return self.mask_refiner(mask_logits, pixels, sizes)

    def _aggregate(self, logits: torch.Tensor) -> torch.Tensor:
        return max_over_synonyms(logits, self._syn_index, len(self.vocabulary))

    def _padded_targets(self, batch: list[dict], size: tuple[int, int]) -> list[dict]:
        targets = []
        for item in batch:
            inst = item["instances"]
            masks = inst["masks"].to(self.device)
            # dataset ids -> training ids
            classes = self._train_class_map[inst["classes"].to(self.device)]
            keep = classes >= 0  # unseen segments (absent from training splits) are dropped
            masks, classes = masks[keep], classes[keep]
            padded = masks.new_zeros((masks.shape[0], *size))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"masks": padded, "classes": classes})
        return targets

    # -- training ----------------------------------------------------------------------------
    def _training_losses(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        if self._crop_train_requested and not self.train_crop:
            raise ValueError("MODEL.MASK_CROP.TRAIN trains the fused crop classifier's own image "
                             "or text tower: set MODEL.MASK_CROP.FUSION_WEIGHT > 0 and "
                             "MODEL.MASK_CROP.OWN_TOWER or OWN_TEXT_TOWER True (a MaskCrop main "
                             "classifier is trained by MODEL.TRAIN_CLASSIFIER)")
        if self.vocabulary is not self.train_vocabulary:
            self.set_vocabulary(self.train_vocabulary, self._train_is_thing)
            self._restore_vocabulary = True
        images, sizes = self._images(batch)
        feats = self.backbone(images)
        text = self.text_embeddings()
        targets = self._padded_targets(batch, tuple(images.shape[-2:]))
        pseudo_raw = None  # the pseudo-labeller's inference pass, reused below
        if self.self_train is not None:
            targets, pseudo_raw = self._with_pseudo_labels(batch, images, sizes, targets, feats)
        losses: dict[str, torch.Tensor] = {}
        proposals = None
        if self.train_generator:
            proposals = self._aggregated(self.mask_generator(feats, text))
            losses.update(self.mask_generator.losses(proposals, targets))
        if self.train_classifier or self.train_crop:
            pred = None
            if self.adapter_masks == "mixed":
                if proposals is None and pseudo_raw is not None:
                    proposals = pseudo_raw["proposals"]  # no second generator run
                elif proposals is None:
                    with torch.no_grad():
                        proposals = self.mask_generator(feats, text)
                pred = proposals.pred_masks.detach().sigmoid()
            frames: dict = {}  # size -> the training masks at that size, built once

            def masks_at(size):
                if size not in frames:
                    frames[size] = self._classifier_targets(targets, pred, size)
                return frames[size]

            feat_size = tuple(feats["res2"].shape[-2:])
            heads = []  # (classifier, its output, its targets) for each classifier being trained
            if self.train_classifier:
                on_feats = masks_at(feat_size)
                heads.append((self.classifier, self._classify(feats, on_feats[0], text, images),
                              on_feats))
            if self.train_crop:  # "image": crops see the objects' own outlines
                crop_size = (tuple(images.shape[-2:]) if self.crop_mask_size == "image"
                             else feat_size)
                if (pred is not None and self.mask_refiner is not None
                        and self.crop_mask_size == "image"):
                    # predicted masks refined as at inference, so the crops train on the
                    # outlines they will be named from
                    if (pseudo_raw is not None and proposals is pseudo_raw["proposals"]
                            and pseudo_raw["refined_masks"] is not None):
                        refined = pseudo_raw["refined_masks"].sigmoid()  # refined once per step
                    else:
                        refined = self._refine(torch.logit(pred, eps=1e-4), images,
                                               sizes).sigmoid()
                    frames[crop_size] = self._classifier_targets(targets, refined, crop_size)
                on_crops = masks_at(crop_size)
                crop_text = self.crop_classifier.text_embeddings(self.vocabulary, text)
                heads.append((self.crop_classifier, self.crop_classifier(
                    feats["clip_dense"], on_crops[0], crop_text, self.backbone, images=images),
                    on_crops))
            for head, out, (_, classes, groups) in heads:
                out = dataclasses.replace(out, logits=self._aggregate(out.logits))
                losses.update(head.losses(out, classes, groups))
            if self.train_crop and self.crop_captions is not None:
                losses["loss_crop_caption"] = self._crop_caption_loss()
        if not losses:
            raise RuntimeError("Nothing to train: MODEL.TRAIN_GENERATOR, TRAIN_CLASSIFIER and "
                               "MASK_CROP.TRAIN are off")
        return losses

    def _crop_caption_loss(self) -> torch.Tensor:
        """The crops' contrastive loss on image-caption pairs drawn at random from
        ``MODEL.MASK_CROP.CAPTIONS.DATASET`` (see there), weighted."""
        records, mapper, n, weight = self.crop_captions
        items = [mapper(records[i]) for i in torch.randint(len(records), (int(n),)).tolist()]
        images = self.backbone.normalize(torch.stack([d["image"] for d in items]).to(self.device))
        captions = [d["caption"] for d in items]
        return weight * self.crop_classifier.caption_loss(images, captions, self.backbone)

    @torch.no_grad()
    def _with_pseudo_labels(self, batch: list[dict], images: torch.Tensor,
                            sizes: list[tuple[int, int]], targets: list[dict],
                            feats: dict | None = None) -> tuple[list[dict], dict]:
        """``targets`` plus the model's own confident masks of unseen classes on unlabelled
        pixels (see ``MODEL.SELF_TRAIN``), named as at inference (``feats``: the backbone's
        features of ``images`` when already computed), and that inference pass's
        :meth:`_predict_raw` output."""
        threshold, min_ignored, min_area = self.self_train
        mode = self.training
        nn.Module.train(self, False)  # inference behaviour (no training-time crop augmentation)
        try:
            raw = self._predict_raw(images, None, None, sizes, feats)
            probs, objectness, logits = self._class_probs(raw, self.ensemble)
        finally:
            nn.Module.train(self, mode)
        score, label = probs.max(-1)
        score = score * objectness
        size = tuple(images.shape[-2:])
        masks = resize_mask_probs(logits.sigmoid(), size) > 0.5
        out = []
        for i, (item, t) in enumerate(zip(batch, targets)):
            sem = item.get("sem_seg")
            if sem is None:
                raise ValueError("MODEL.SELF_TRAIN needs semantic labels (sem_seg) in the "
                                 "training data: it pseudo-labels the ignore-labelled pixels")
            h, w = sizes[i]
            ignored = torch.zeros(size, dtype=torch.bool, device=self.device)
            ignored[:h, :w] = sem.to(self.device) == IGNORE_LABEL
            chosen: list[torch.Tensor] = []
            classes: list[int] = []
            for q in score[i].argsort(descending=True).tolist():
                if score[i, q] < threshold:
                    break
                c = int(label[i, q])
                if self._seen[c]:
                    continue
                m = masks[i, q]
                area = int(m.sum())
                if area < max(1.0, min_area * h * w) or (m & ignored).sum() < min_ignored * area:
                    continue
                m = m & ignored
                flat = m.flatten()[None]
                if chosen and mask_iou(flat, torch.stack(chosen).flatten(1)).max() > 0.5:
                    continue  # a duplicate of a better-scored pseudo-label
                chosen.append(m)
                classes.append(c)
            if chosen:
                t = dict(t, masks=torch.cat([t["masks"], torch.stack(chosen).to(t["masks"])]),
                         classes=torch.cat([t["classes"], torch.tensor(
                             classes, dtype=t["classes"].dtype, device=self.device)]))
            out.append(t)
        return out, raw

    def _classifier_targets(self, targets: list[dict], pred: torch.Tensor | None,
                            size: tuple[int, int]):
        """The masks a classifier trains on (ground truth, plus matched and unmatched predicted
        masks in "mixed" mode) at ``size``, collated: ``(masks [B,M,*size], classes, groups)``."""
        if pred is not None:
            pred = resize_mask_probs(pred, size)
        per_image = []
        for i, t in enumerate(targets):
            if len(t["masks"]) and tuple(t["masks"].shape[-2:]) == size:
                gt = t["masks"].bool()
            elif len(t["masks"]):
                gt = F.interpolate(t["masks"][None].float(), size=size, mode="bilinear",
                                   align_corners=False)[0] > 0.5
            else:  # no seen segment in this image
                gt = torch.zeros((0, *size), dtype=torch.bool, device=self.device)
            per_image.append(build_adapter_targets(
                None if pred is None else pred[i], gt, t["classes"],
                self.adapter_iou_threshold, mode=self.adapter_masks,
                num_pred=self.adapter_num_pred, unmatched_label=len(self.vocabulary)))
        return collate_adapter_targets(per_image)

    def _classify(self, feats: dict, masks: torch.Tensor, text: torch.Tensor, images: torch.Tensor):
        """Run the mask classifier (with the images when it crops them, e.g. MaskCrop)."""
        if getattr(self.classifier, "needs_images", False):
            text = self.classifier.text_embeddings(self.vocabulary, text)
            return self.classifier(feats["clip_dense"], masks, text, self.backbone, images=images)
        return self.classifier(feats["clip_dense"], masks, text, self.backbone)

    def _aggregated(self, proposals):
        aux = [dict(a, pred_logits=self._aggregate(a["pred_logits"])) for a in proposals.aux]
        return dataclasses.replace(proposals, pred_logits=self._aggregate(proposals.pred_logits),
                                   aux=aux)

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict_masks(self, images: torch.Tensor, external_masks: torch.Tensor | None = None,
                      external_scores: torch.Tensor | None = None,
                      image_sizes: list[tuple[int, int]] | None = None,
                      ensemble: bool | None = None):
        """Class probabilities, objectness and mask logits for a padded batch.

        ``external_masks`` (Tensor[B,Q,h,w] probabilities, e.g. from SAM) replace the generator's
        masks; they are named by the classifier alone, and ``external_scores`` (Tensor[B,Q] in
        [0, 1], e.g. SAM's predicted IoU) become their objectness. With ``leftover_regions`` the
        masks (the generator's, or external ones with scores) are followed by that many leftover
        proposals (:func:`leftover_masks`, named by the classifier alone, objectness 1; empty
        slots 0); ``image_sizes`` (the unpadded size of each image) keeps them out of the
        padding. ``ensemble`` overrides whether the in-/out-of-vocabulary ensemble applies
        (default: ``MODEL.ENSEMBLE.ENABLED``). Returns ``(probs [B,Q,C], objectness [B,Q],
        mask_logits [B,Q,h,w])``; the generator's masks are at its own resolution (1/4 of the
        padded batch for PMP), or at the batch's with ``MODEL.TEST.MASK_REFINE`` (refined).
        """
        raw = self._predict_raw(images, external_masks, external_scores, image_sizes)
        return self._class_probs(raw, self.ensemble if ensemble is None else ensemble)

    def _predict_raw(self, images, external_masks, external_scores, image_sizes,
                     feats: dict | None = None) -> dict:
        """Everything of :meth:`predict_masks` but the final class distribution (``feats``: the
        backbone's features of ``images``, computed here when not given)."""
        feats = self.backbone(images) if feats is None else feats
        text = self.text_embeddings()
        gen_logits = proposals = refined = None
        if external_masks is None:
            proposals = self.mask_generator(feats, text)
            mask_logits = proposals.pred_masks
            gen_logits = self._aggregate(proposals.pred_logits)
        else:
            mask_logits = torch.logit(external_masks, eps=1e-4)
        b, q = mask_logits.shape[:2]
        keep = torch.arange(q, device=mask_logits.device).expand(b, q)
        if gen_logits is not None and 0 < self.max_masks_classified < q:
            obj = 1 - gen_logits.softmax(-1)[..., -1]
            keep = obj.topk(self.max_masks_classified, dim=1).indices.sort(dim=1).values
            mask_logits = torch.gather(mask_logits, 1, keep[..., None, None].expand(
                -1, -1, *mask_logits.shape[-2:]))
            gen_logits = torch.gather(gen_logits, 1,
                                      keep[..., None].expand(-1, -1, gen_logits.shape[-1]))
        if external_masks is None:
            external_scores = None  # scores belong to external masks only
            if self.mask_refiner is not None:  # outlines onto the image's edges (before naming)
                mask_logits = self._refine(mask_logits, images, image_sizes)
                if mask_logits.shape[1] == proposals.pred_masks.shape[1]:
                    refined = mask_logits  # every generator mask, in its order
            if self.neck_split is not None:
                mask_logits, gen_logits = self._split_necks(feats, text, images, mask_logits,
                                                            gen_logits)
        if external_scores is not None and external_scores.shape != mask_logits.shape[:2]:
            raise ValueError(f"external_scores {tuple(external_scores.shape)} must be B x Q = "
                             f"{tuple(mask_logits.shape[:2])}")
        q = mask_logits.shape[1]
        mask_probs = mask_logits.sigmoid()
        found = None
        mask_objectness = (1 - gen_logits.softmax(-1)[..., -1] if gen_logits is not None
                           else external_scores)
        if mask_objectness is not None and self.leftover_regions > 0:
            valid = None
            if image_sizes is not None:
                scale = mask_probs.shape[-2] / images.shape[-2]
                valid = [(max(1, round(h * scale)), max(1, round(w * scale)))
                         for h, w in image_sizes]
            left, found = leftover_masks(mask_probs, mask_objectness.to(mask_probs),
                                         self.leftover_regions, self.leftover_min_area, valid)
            if self.leftover_split[0] and bool(found.any()) and (
                    external_masks is None or self.leftover_split[4]):
                left, found = self._split_leftovers(feats, text, images, left, found, valid)
            mask_probs = torch.cat([mask_probs, left], dim=1)
            mask_logits = torch.cat([mask_logits, torch.logit(left, eps=1e-4).to(mask_logits)],
                                    dim=1)
        cls_logits = self._name_masks(feats, mask_probs, text, images)
        return {"cls_logits": cls_logits, "gen_logits": gen_logits, "num_masks": q,
                "found": found, "external_scores": external_scores, "mask_logits": mask_logits,
                "proposals": proposals, "refined_masks": refined}

    def _name_masks(self, feats: dict, mask_probs: torch.Tensor, text: torch.Tensor,
                    images: torch.Tensor) -> torch.Tensor:
        """[B, Q, C+1] class logits of ``mask_probs`` from the classifier, fused with the
        crops' distribution when there is a crop classifier (the ensemble comes later)."""
        cls_logits = self._aggregate(self._classify(feats, mask_probs, text, images).logits)
        if self.crop_classifier is not None:  # geometric fusion with the crops' distribution
            crop_text = self.crop_classifier.text_embeddings(self.vocabulary, text)
            crop = self.crop_classifier(feats["clip_dense"], mask_probs, crop_text,
                                        self.backbone, images=images)
            w = self.crop_weight
            cls_logits = ((1 - w) * cls_logits.float().log_softmax(-1)
                          + w * self._aggregate(crop.logits).float().log_softmax(-1))
        return cls_logits

    def _split_necks(self, feats, text, images, mask_logits, gen_logits):
        """Cut the generator's masks at narrow necks (``MODEL.TEST.NECK_SPLIT``) where the parts
        take different names, all of things. Returns ``(mask_logits [B, Q', h, w], gen_logits [B, Q', C+1])``:
        each cut mask's first part in its slot, the others after the Q masks; a part's generator
        logits keep the mask's void probability, spread evenly over the classes; slots that
        one image fills and another does not hold empty void masks."""
        depth, min_core = self.neck_split
        b, q, h, w = mask_logits.shape
        probs = mask_logits.sigmoid()
        min_px = max(1, round(min_core * h * w))
        cands = [[(s, parts) for s in range(q)
                  if len(parts := neck_parts(probs[i, s], depth, min_px)) > 1] for i in range(b)]
        counts = [sum(len(p) for _, p in c) for c in cands]
        if not any(counts):
            return mask_logits, gen_logits
        batch = probs.new_zeros(b, max(counts), h, w)
        for i, c in enumerate(cands):
            if counts[i]:
                batch[i, :counts[i]] = torch.cat([p for _, p in c])
        labels = self._name_masks(feats, batch, text, images)[..., :-1].argmax(-1).tolist()
        void = gen_logits.float().softmax(-1)[..., -1].clamp(1e-6, 1 - 1e-6)  # [B, Q]
        n_cls = gen_logits.shape[-1] - 1
        masks, gens = [list(m) for m in mask_logits], [list(g) for g in gen_logits]
        for i, c in enumerate(cands):
            start = 0
            for s, parts in c:
                names, start = labels[i][start:start + len(parts)], start + len(parts)
                if len(set(names)) < 2 or not all(self.is_thing[n] for n in names):
                    continue  # one name, or stuff (which spreads over blobs): the mask stays whole
                joined: dict[int, torch.Tensor] = {}
                for part, name in zip(parts, names):
                    joined[name] = joined[name] + part if name in joined else part
                v = void[i, s]
                row = torch.cat([((1 - v) / n_cls).log().expand(n_cls), v.log()[None]])
                row = row.to(gen_logits)
                for j, part in enumerate(joined.values()):
                    logit = torch.logit(part, eps=1e-4).to(mask_logits)
                    if j == 0:
                        masks[i][s], gens[i][s] = logit, row
                    else:
                        masks[i].append(logit)
                        gens[i].append(row)
        n = max(len(m) for m in masks)
        empty = mask_logits.new_full((h, w), torch.logit(torch.tensor(1e-4)).item())
        pad = torch.full_like(gen_logits[0, 0], -1e4)
        pad[-1] = 0  # all void: objectness 0
        masks = torch.stack([torch.stack(m + [empty] * (n - len(m))) for m in masks])
        gens = torch.stack([torch.stack(g + [pad] * (n - len(g))) for g in gens])
        return masks, gens

    def _split_leftovers(self, feats, text, images, left, found, valid):
        """Cut each leftover region where the names of its tiles change (``MODEL.TEST.
        LEFTOVER_SPLIT``): two uncovered classes side by side (e.g. two kinds of stuff that
        training never labelled) form one connected region, which one name would cover.
        Returns ``(masks [B, K*P, h, w], found [B, K*P])``, each region's parts in its slots."""
        grid, max_parts, fill, share, _ = self.leftover_split
        b, k, h, w = left.shape
        jobs, per_image = [], [[] for _ in range(b)]
        for i, s in found.nonzero().tolist():
            pieces, boxes = leftover_tiles(left[i, s], grid, valid[i] if valid else None, fill)
            jobs.append((i, s, sum(len(p) for p in per_image[i]), boxes))
            per_image[i].append(pieces)
        counts = [sum(len(p) for p in pieces) for pieces in per_image]
        labels = None
        if max(counts) > 0:
            batch = left.new_zeros(b, max(counts), h, w)
            for i, pieces in enumerate(per_image):
                if counts[i]:
                    batch[i, :counts[i]] = torch.cat(pieces)
            labels = self._name_masks(feats, batch, text, images)[..., :-1].argmax(-1).tolist()
        out = left.new_zeros(b, k * max_parts, h, w)
        out_found = torch.zeros(b, k * max_parts, dtype=torch.bool, device=left.device)
        used = [0] * b
        for i, s, start, boxes in jobs:
            vh, vw = valid[i] if valid else (h, w)
            parts = left[i, s][None]
            if boxes:
                names = labels[i][start:start + len(boxes)]
                parts = split_by_tile_names(left[i, s], boxes, names, max_parts, share,
                                            min_pixels=max(1, round(self.leftover_min_area
                                                                    * vh * vw)))
            out[i, used[i]:used[i] + len(parts)] = parts
            out_found[i, used[i]:used[i] + len(parts)] = True
            used[i] += len(parts)
        return out, out_found

    def _class_probs(self, raw: dict, ensemble: bool):
        """``(probs, objectness, mask_logits)`` from :meth:`_predict_raw`'s output."""
        cls_logits, q, found = raw["cls_logits"], raw["num_masks"], raw["found"]
        # The masks' own scores (generator or external) decide their objectness; the leftover
        # proposals have none: the classifier alone names them, with objectness 1.
        probs, objectness = combine_class_probs(cls_logits[:, :q], raw["gen_logits"], self._seen,
                                                ensemble, self.alpha, self.beta)
        if raw["external_scores"] is not None:
            objectness = raw["external_scores"].to(objectness).clamp(0, 1)
        if found is not None:
            left_probs, _ = combine_class_probs(cls_logits[:, q:], None)
            probs = torch.cat([probs, left_probs.to(probs)], dim=1)
            objectness = torch.cat([objectness, found.to(objectness)], dim=1)
        return probs, objectness, raw["mask_logits"]

    def ensemble_for(self, task: str) -> bool:
        """Whether the in-/out-of-vocabulary ensemble names the masks for ``task``."""
        return bool(self.ensemble) and task in self.ensemble_tasks

    @staticmethod
    def output_masks(mask_logits, image_size, padded_size, out_size) -> torch.Tensor:
        """Mask logits Tensor[Q,h,w] over the padded batch of ``padded_size`` ->
        Tensor[Q, *out_size] over the image (``image_size``, top-left of the padded frame)."""
        scale = mask_logits.shape[-2] / max(1, padded_size[0])
        crop = (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))
        return resize_masks(mask_logits, out_size, crop=crop)

    def postprocess(self, probs, objectness, mask_logits, image_size, padded_size, out_size,
                    tasks=None, rank_by_objectness: bool = False, masks=None) -> dict:
        """Per-image results at ``out_size``.

        ``mask_logits`` Tensor[Q,h,w] cover the padded batch of ``padded_size``; the image itself
        is ``image_size`` (top-left). ``masks``, when given, are those logits already brought to
        the output frame by :meth:`output_masks` (reused across calls). With
        ``rank_by_objectness`` (class-agnostic masks with their own quality scores, e.g. SAM's)
        the panoptic merge keeps and orders masks by objectness alone. Returns the output dict
        of the requested ``tasks``.
        """
        tasks = self.tasks if tasks is None else tasks
        if masks is None:
            masks = self.output_masks(mask_logits, image_size, padded_size, out_size)
        result = {}
        if "semantic" in tasks:
            result["sem_seg"] = semantic_inference(probs, objectness, masks)
        if "panoptic" in tasks:
            result["panoptic_seg"] = panoptic_inference(
                probs, objectness, masks, self.is_thing, self.object_mask_threshold,
                self.overlap_threshold, mask_scores=objectness if rank_by_objectness else None)
        if "instance" in tasks:
            result["instances"] = instance_inference(probs, objectness, masks, self.is_thing,
                                                     self.detections_per_image)
        return result

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode and getattr(self, "_restore_vocabulary", False):  # back to the dataset's
            self.set_vocabulary(self.dataset_vocabulary, self.dataset_is_thing)
            self._restore_vocabulary = False
        return self

    def forward(self, batch: list[dict], external_masks: torch.Tensor | None = None,
                external_scores: torch.Tensor | None = None):
        if self.training:
            return self._training_losses(batch)
        images, sizes = self._images(batch)
        raw = self._predict_raw(images, external_masks, external_scores, sizes)
        ranked = external_scores is not None
        padded = tuple(images.shape[-2:])
        passes = []  # (tasks, class probabilities): one or two settings of the ensemble
        for ens in sorted({self.ensemble_for(t) for t in self.tasks}):
            tasks = tuple(t for t in self.tasks if self.ensemble_for(t) == ens)
            passes.append((tasks, self._class_probs(raw, ens)))
        mask_logits = raw["mask_logits"]
        outputs = []
        for i, item in enumerate(batch):
            out_size = (int(item.get("height", sizes[i][0])), int(item.get("width", sizes[i][1])))
            masks = self.output_masks(mask_logits[i], sizes[i], padded, out_size)  # once per image
            out = {}
            for tasks, (probs, objectness, _) in passes:
                out.update(self.postprocess(probs[i], objectness[i], mask_logits[i], sizes[i],
                                            padded, out_size, tasks=tasks,
                                            rank_by_objectness=ranked, masks=masks))
            outputs.append(out)
        return outputs
