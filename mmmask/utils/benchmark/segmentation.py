"""Segmentation figures: pipeline vs CLIP trunk, Mask-Adapter share, crop-and-classify, memory.

Models are built with :func:`mmmask.modeling.build_model` from ``configs/shapes/pmp.yaml`` (the
keys are set in code when the repository's configs are not next to the package) with random
weights, ``MODEL.CLIP.MODEL_NAME`` swapped for the CLIP shape under test and
``MODEL.PMP.NUM_QUERIES`` masks per image.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch
import torch.nn.functional as F

from .timing import sync, time_side_by_side

__all__ = ["build_segmentor", "random_image", "pipeline_figures", "crop_and_classify",
           "crop_vs_pipeline", "peak_memory"]

PMP_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "shapes" / "pmp.yaml"


def build_segmentor(clip_name: str, *, num_queries: int = 100, device: str = "cpu",
                    opts: list | None = None):
    """An eval-mode ``OpenVocabSegmentor`` (PMP + Mask-Adapter) on ``clip_name``, random weights.

    Only the semantic task is post-processed (the figure of the ADE/PC/VOC benchmarks).
    """
    from mmmask.config import get_cfg
    from mmmask.modeling import build_model

    cfg = get_cfg()
    if PMP_CONFIG.is_file():
        cfg.merge_from_file(str(PMP_CONFIG))
    else:  # installed without the repository's configs: the keys of configs/shapes/pmp.yaml
        cfg.merge_from_list(["MODEL.MASK_GENERATOR.NAME", "PMP", "MODEL.PMP.HIDDEN_DIM", 128,
                             "MODEL.PMP.MASK_DIM", 64, "MODEL.PMP.DEC_LAYERS", 6])
    cfg.merge_from_list(["MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.MODEL_NAME", clip_name,
                         "MODEL.PMP.NUM_QUERIES", num_queries, "MODEL.DEVICE", str(device),
                         "DATASETS.TRAIN", ("shapes_ov_train",)] + list(opts or []))
    model = build_model(cfg).to(device).eval()
    model.tasks = ("semantic",)
    return model


def random_image(size: int, seed: int = 0) -> torch.Tensor:
    """uint8 Tensor[3, size, size] of smooth random colours (a stand-in photograph)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, size // 32), max(2, size // 32), generator=g)
    img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
    noise = torch.rand(3, size, size, generator=g) * 0.1
    return ((img * 0.9 + noise) * 255).clamp(0, 255).to(torch.uint8)


def _batch(image: torch.Tensor) -> list[dict]:
    return [{"image": image, "height": int(image.shape[1]), "width": int(image.shape[2])}]


@torch.no_grad()
def pipeline_figures(model, size: int, *, repeats: int, warmup: int, top_n: int = 0,
                     with_adapter: bool = True, refine: bool = False) -> dict:
    """Pipeline (eval forward) vs CLIP trunk alone, and the Mask-Adapter's share.

    Times side by side: ``trunk`` (``model.backbone`` on the normalised image), ``pipeline``
    (``model(batch)``: trunk + PMP + Mask-Adapter on every proposal + semantic post-processing),
    ``adapter`` (the classifier alone on the same features and the PMP's masks) and, with
    ``top_n``, the pipeline classifying only the ``top_n`` most object-like masks
    (``MODEL.TEST.MAX_MASKS_CLASSIFIED``) and, with ``refine``, the pipeline refining every
    mask at the image's resolution before naming it (``MODEL.TEST.MASK_REFINE`` defaults, and
    with ``SUBSAMPLE 2``).
    """
    device = model.device
    image = random_image(size).to(device)
    batch = _batch(image)
    images, _ = model._images(batch)
    feats = model.backbone(images)
    text = model.text_embeddings()
    proposals = model.mask_generator(feats, text)
    masks = proposals.pred_masks.sigmoid()
    fns = {"trunk": lambda: model.backbone(images), "pipeline": lambda: model(batch)}
    if with_adapter:
        fns["adapter"] = lambda: model.classifier(feats["clip_dense"], masks, text, model.backbone)
    if top_n:
        def pipeline_top_n():
            model.max_masks_classified = top_n
            try:
                return model(batch)
            finally:
                model.max_masks_classified = 0

        fns["pipeline_top_n"] = pipeline_top_n
    if refine:
        from mmmask.modeling.mask_refine import MaskRefiner

        def refined(subsample: int):
            def run():
                before, model.mask_refiner = model.mask_refiner, MaskRefiner(subsample=subsample)
                try:
                    return model(batch)
                finally:
                    model.mask_refiner = before
            return run

        fns["pipeline_refined"] = refined(1)
        fns["pipeline_refined_fast"] = refined(2)
    t = time_side_by_side(fns, repeats=repeats, warmup=warmup, device=device)
    out = {"size": size, "num_masks": int(masks.shape[1]),
           "dense_map": list(feats["clip_dense"].shape[-2:]),
           "timings": {k: v.as_dict() for k, v in t.items()},
           "pipeline_over_trunk": t["pipeline"].median / t["trunk"].median}
    if with_adapter:
        out["adapter_share"] = t["adapter"].median / t["pipeline"].median
    if top_n:
        out["top_n"] = top_n
        out["pipeline_top_n_over_trunk"] = t["pipeline_top_n"].median / t["trunk"].median
    if refine:
        out["refined_over_pipeline"] = t["pipeline_refined"].median / t["pipeline"].median
        out["refined_fast_over_pipeline"] = (t["pipeline_refined_fast"].median
                                             / t["pipeline"].median)
    return out


def _crop_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a bool mask [H, W]; the whole image when it is empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@torch.no_grad()
def crop_and_classify(model, image: torch.Tensor, masks: torch.Tensor, *,
                      batch_size: int = 25) -> torch.Tensor:
    """The two-stage baseline: one CLIP ``encode_image`` per masked crop.

    Args:
        image: uint8 [3, H, W]; masks: bool [Q, H, W].
    Returns:
        Tensor[Q, S] cosine similarities with the vocabulary's synonyms (S).
    """
    clip = model.backbone.clip
    side = clip.visual.image_size
    side = side[0] if isinstance(side, (tuple, list)) else int(side)
    normed = model.backbone.normalize(image[None])[0]  # [3, H, W]; background = 0 (the mean)
    text = model.text_embeddings()
    out = []
    for start in range(0, masks.shape[0], batch_size):
        crops = []
        for m in masks[start:start + batch_size]:
            y0, y1, x0, x1 = _crop_box(m)
            crop = (normed * m)[:, y0:y1, x0:x1]  # (3, h, w) masked crop
            crops.append(F.interpolate(crop[None], size=(side, side), mode="bilinear",
                                       align_corners=False)[0])
        emb = F.normalize(clip.encode_image(torch.stack(crops)), dim=-1)  # (n, D_emb)
        out.append(emb @ text.T)
    return torch.cat(out) if out else text.new_zeros(0, text.shape[0])


@torch.no_grad()
def crop_vs_pipeline(model, size: int, *, repeats: int, warmup: int, fused=None) -> dict:
    """mmmask's whole pipeline vs naming the same masks by crop-and-classify (masks given), and
    vs ``fused``, the same model with :class:`MaskCrop` fused into its classifier (the shipped
    default; see :func:`build_fused_segmentor`), when given."""
    device = model.device
    image = random_image(size, seed=1).to(device)
    batch = _batch(image)
    images, _ = model._images(batch)
    feats = model.backbone(images)
    proposals = model.mask_generator(feats, model.text_embeddings())
    masks = F.interpolate(proposals.pred_masks, size=images.shape[-2:], mode="bilinear",
                          align_corners=False)[0, :, :size, :size] > 0  # [Q, H, W]
    crop_and_classify(model, image, masks[:4])  # a partial warm-up: the crops are costly
    fns = {"pipeline": lambda: model(batch),
           "crop_and_classify": lambda: crop_and_classify(model, image, masks)}
    if fused is not None:
        fns["pipeline_with_crop_fusion"] = lambda: fused(batch)
    t = time_side_by_side(fns, repeats=repeats, warmup=warmup, device=device)
    out = {"size": size, "num_masks": int(masks.shape[0]),
           "timings": {k: v.as_dict() for k, v in t.items()},
           "crop_over_pipeline": t["crop_and_classify"].median / t["pipeline"].median}
    if fused is not None:
        out["fusion_over_pipeline"] = (t["pipeline_with_crop_fusion"].median
                                       / t["pipeline"].median)
    return out


def build_fused_segmentor(model, clip_name: str, *, num_queries: int, device: str = "cpu",
                          weight: float = 0.85):
    """``model`` (from :func:`build_segmentor`) again, same weights, with MaskCrop fused into its
    classifier at ``weight`` (0.85: the shipped Shapes-OV default) and crops of CLIP's own
    input size."""
    side = model.backbone.clip.visual.image_size
    side = side[0] if isinstance(side, (tuple, list)) else int(side)
    fused = build_segmentor(clip_name, num_queries=num_queries, device=device,
                            opts=["MODEL.MASK_CROP.FUSION_WEIGHT", float(weight),
                                  "MODEL.CLIP.IMAGE_SIZE", side])
    fused.load_state_dict(model.state_dict())  # the fusion adds no weights
    return fused


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


def _cpu_peak_child(clip_name: str, size: int, num_queries: int, threads: int, queue) -> None:
    """In a fresh process: build, embed the vocabulary, then measure one forward."""
    torch.set_num_threads(threads)
    model = build_segmentor(clip_name, num_queries=num_queries)
    batch = _batch(random_image(size))
    with torch.no_grad():
        model.text_embeddings()
        if _reset_peak_rss():
            base = _proc_status_kb("VmRSS") or 0
            model(batch)
            peak = _proc_status_kb("VmHWM") or 0
            method = "fresh process: peak RSS (VmHWM after clear_refs) - RSS before the forward"
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            model(batch)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = "fresh process: ru_maxrss growth (a lower bound)"
    queue.put({"method": method, "size": size, "inference_peak_mb": max(peak - base, 0) / 1024,
               "peak_mb": peak / 1024, "rss_before_mb": base / 1024})


def peak_memory(clip_name: str, size: int, *, num_queries: int = 100,
                device: str = "cpu") -> dict:
    """Peak memory of one inference (``model(batch)``) of a freshly built model.

    CPU: in a spawned process (so that memory freed by earlier runs does not hide the peak) the
    kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) before the forward and read
    (``VmHWM``) after it; the figure is that peak minus the RSS before the forward (MiB). Where
    the reset is impossible, the growth of ``getrusage().ru_maxrss`` (a lower bound).
    CUDA: ``torch.cuda.max_memory_allocated`` growth during the forward.
    """
    if torch.device(device).type != "cuda":
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_cpu_peak_child,
                           args=(clip_name, size, num_queries, torch.get_num_threads(), queue))
        proc.start()
        try:
            return queue.get(timeout=900)
        finally:
            proc.join(timeout=60)
    model = build_segmentor(clip_name, num_queries=num_queries, device=device)
    batch = _batch(random_image(size).to(device))
    with torch.no_grad():
        model.text_embeddings()
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(batch)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    return {"method": "torch.cuda.max_memory_allocated", "size": size,
            "inference_peak_mb": (peak - base) / 2**20, "peak_mb": peak / 2**20}


# Inference settings of the shipped Shapes-OV segmenter, each switched off in one variant.
SHIPPED_SETTINGS = {
    "neck cut": ["MODEL.TEST.NECK_SPLIT.ENABLED", "False"],
    "mirrored crops": ["MODEL.MASK_CROP.FLIP", "False"],
    "half-turned crops": ["MODEL.MASK_CROP.ROTATIONS", "()"],
    "leftover cut": ["MODEL.TEST.LEFTOVER_SPLIT.GRID", "0"],
    "mask refinement": ["MODEL.TEST.MASK_REFINE.ENABLED", "False"],
}


def shipped_settings_figures(num_images: int, *, repeats: int, warmup: int,
                             device: str = "cpu") -> dict:
    """The shipped Shapes-OV segmenter through the Predictor on ``num_images`` Shapes-OV val
    images, against the same model with each of :data:`SHIPPED_SETTINGS` off: seconds per image
    and ``shipped_over_without[setting]``, the ratio shipped / without it (its cost).
    ``{"skipped": why}`` when no model is shipped."""
    import os

    from mmmask.data.shapes import render_sample
    from mmmask.predictor import SegmentationPredictor, default_config_file

    if not os.path.isfile(default_config_file()):
        return {"skipped": f"no shipped segmenter ({default_config_file()})"}
    variants = {"shipped": []} | {f"without {k}": v for k, v in SHIPPED_SETTINGS.items()}
    predictors = {k: SegmentationPredictor.from_files(opts=o, device=device)
                  for k, o in variants.items()}
    cfg = predictors["shipped"].cfg
    shapes = cfg.DATASETS.SHAPES
    images = [render_sample(shapes.SEED, "val", i, shapes.IMAGE_SIZE).image
              for i in range(num_images)]
    fns = {k: (lambda p=p: [p.predict(im) for im in images]) for k, p in predictors.items()}
    times = time_side_by_side(fns, repeats=repeats, warmup=warmup, device=device)
    per_image = {k: t.median / num_images for k, t in times.items()}
    return {"num_images": num_images, "image_size": shapes.IMAGE_SIZE, "per_image_s": per_image,
            "shipped_over_without": {k: per_image["shipped"] / per_image[f"without {k}"]
                                     for k in SHIPPED_SETTINGS}}
