"""Benchmarks of mmmask: every figure is a ratio measured side by side in one run.

``run_benchmark(quick=False)`` returns a JSON-ready dict (machine description, per-section
results, a list of headline figures with targets); :func:`format_table` prints the figures.
``tools/benchmark.py`` is the command line. Sections (``SECTIONS``):

- ``pipeline``: open-vocabulary pipeline (OpenVocabSegmentor eval forward) / CLIP trunk alone,
  and the Mask-Adapter's share of the pipeline at ``NUM_QUERIES`` masks;
- ``crop``: crop-and-classify (one CLIP ``encode_image`` per masked crop) / mmmask pipeline,
  and the pipeline with ``MaskCrop`` fused into its classifier (the shipped default) / pipeline;
- ``sam``: mmmask's SAM automatic path / ``SamAutomaticMaskGenerator``, naming share;
- ``cm3``: KV-cache / recompute tokens per second;
- ``text``: text classifier padded to the full context / truncated to the longest prompt;
- ``eval``: mIoU accumulation megapixels/s; ``memory``: peak memory of one inference;
- ``shipped``: the shipped Shapes-OV segmenter through the Predictor, with each of its inference
  settings (neck cut, mirrored crops, half-turned crops, leftover cut, mask refinement) / the
  same without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .components import (benchmark_prompts, build_sam_generator, cm3_figures, eval_figures,
                         sam_figures, text_figures)
from .segmentation import (build_fused_segmentor, build_segmentor, crop_vs_pipeline,
                           peak_memory, pipeline_figures, random_image, shipped_settings_figures)
from .timing import machine_info, time_side_by_side

__all__ = ["BenchmarkPlan", "QUICK", "FULL", "SECTIONS", "run_benchmark", "format_table",
           "time_side_by_side"]

SECTIONS = ("pipeline", "crop", "sam", "cm3", "text", "eval", "shipped", "memory")


@dataclass(frozen=True)
class BenchmarkPlan:
    """Sizes and models of one benchmark run."""

    clips: tuple[tuple[str, str], ...]  # (label, open_clip model name)
    sizes: tuple[int, ...]  # square image sides of the pipeline figures
    num_masks: int  # MODEL.PMP.NUM_QUERIES
    top_n: int  # MODEL.TEST.MAX_MASKS_CLASSIFIED variant timed at the first size
    crop_clip: str  # CLIP of the crop-and-classify comparison (its label in ``clips``)
    crop_size: int
    sam_opts: tuple  # MODEL.SAM.* overrides (random weights)
    sam_size: int
    cm3: dict  # CM3Config fields
    text_clip: str
    eval_size: int
    memory_size: int
    shipped_images: int  # Shapes-OV val images of the ``shipped`` section
    repeats: int
    warmup: int


_TINY_SAM = ("MODEL.SAM.VARIANT", "custom", "MODEL.SAM.IMAGE_SIZE", 256,
             "MODEL.SAM.ENCODER_EMBED_DIM", 96, "MODEL.SAM.ENCODER_DEPTH", 2,
             "MODEL.SAM.ENCODER_NUM_HEADS", 4, "MODEL.SAM.ENCODER_GLOBAL_ATTN_INDEXES", [1],
             "MODEL.SAM.WINDOW_SIZE", 8, "MODEL.SAM.PROMPT_EMBED_DIM", 64,
             "MODEL.SAM.DECODER_MLP_DIM", 256, "MODEL.SAM.DECODER_NUM_HEADS", 4,
             "MODEL.SAM.POINTS_PER_SIDE", 4)
# Random weights: the quality filters and NMS are off so that SAM returns masks to name. Their
# masks are noisy, so AMG's run-length encoding dominates its time: few points, small images.
_SAM_FILTERS = ("MODEL.SAM.PRED_IOU_THRESH", 0.0, "MODEL.SAM.STABILITY_SCORE_THRESH", 0.0,
                "MODEL.SAM.BOX_NMS_THRESH", 1.0)

QUICK = BenchmarkPlan(
    clips=(("convnext", "mmmask-shapes-convnext"), ("vit", "mmmask-shapes-vit")),
    sizes=(256,), num_masks=100, top_n=25, crop_clip="mmmask-shapes-convnext", crop_size=256,
    sam_opts=_TINY_SAM + _SAM_FILTERS, sam_size=256,
    cm3=dict(n_layer=2, n_head=2, n_embd=64, block_size=300, vocab_size=523),
    text_clip="mmmask-shapes-vit", eval_size=256, memory_size=256, shipped_images=1, repeats=1,
    warmup=1)

FULL = BenchmarkPlan(
    clips=(("convnext", "convnext_tiny"), ("vit", "ViT-S-32")),
    sizes=(512, 1024), num_masks=100, top_n=25, crop_clip="convnext_tiny", crop_size=512,
    sam_opts=("MODEL.SAM.VARIANT", "custom", "MODEL.SAM.IMAGE_SIZE", 512,
              "MODEL.SAM.ENCODER_EMBED_DIM", 256, "MODEL.SAM.ENCODER_DEPTH", 4,
              "MODEL.SAM.ENCODER_NUM_HEADS", 8, "MODEL.SAM.ENCODER_GLOBAL_ATTN_INDEXES", [1, 3],
              "MODEL.SAM.WINDOW_SIZE", 14, "MODEL.SAM.PROMPT_EMBED_DIM", 256,
              "MODEL.SAM.DECODER_MLP_DIM", 2048, "MODEL.SAM.DECODER_NUM_HEADS", 8,
              "MODEL.SAM.POINTS_PER_SIDE", 4) + _SAM_FILTERS, sam_size=256,
    cm3=dict(n_layer=4, n_head=4, n_embd=256, block_size=300, vocab_size=523),
    text_clip="ViT-B-32", eval_size=512, memory_size=512, shipped_images=20, repeats=2,
    warmup=1)

# (result path, label, target, comparison): the headline figures of the table.
_TARGETS = {"pipeline_over_trunk": (1.3, "<="), "adapter_share": (0.10, "<="),
            "crop_over_pipeline": (20.0, ">="), "mmmask_over_official": (1.05, "<="),
            "speedup": (5.0, ">="), "padded_over_truncated": (5.0, ">=")}


def _figure(name: str, value: float, unit: str = "x", key: str | None = None) -> dict:
    target = _TARGETS.get(key or "")
    row = {"figure": name, "value": value, "unit": unit}
    if target:
        bound, op = target
        row["target"] = f"{op} {bound:g}"
        row["met"] = bool(value <= bound if op == "<=" else value >= bound)
    return row


def run_benchmark(quick: bool = False, device: str | None = None,
                  sections: tuple[str, ...] = SECTIONS, plan: BenchmarkPlan | None = None,
                  threads: int = 1, progress: Callable[[str], None] = print) -> dict:
    """Run the benchmark ``sections``; returns ``{"machine", "plan", "results", "figures"}``.

    ``threads``: torch CPU threads during the run (0 = leave torch's setting). The default 1
    gives stable ratios on shared machines, where extra threads mostly wait on each other.
    """
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _run(quick, device, sections, plan, progress)
    finally:
        torch.set_num_threads(previous)


def _run(quick, device, sections, plan, progress) -> dict:
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"Unknown benchmark sections {unknown}; valid: {list(SECTIONS)}")
    plan = plan or (QUICK if quick else FULL)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()
    results: dict = {}
    figures: list[dict] = []
    models: dict[str, object] = {}

    def log(msg: str) -> None:
        progress(f"[{time.perf_counter() - start:6.1f}s] {msg}")

    def segmentor(name: str):
        if name not in models:
            log(f"building OpenVocabSegmentor on {name}")
            models[name] = build_segmentor(name, num_queries=plan.num_masks, device=str(dev))
        return models[name]

    r, w = plan.repeats, plan.warmup
    with torch.no_grad():
        if "pipeline" in sections:
            for label, name in plan.clips:
                for i, size in enumerate(plan.sizes):
                    log(f"pipeline {label} ({name}) {size}px")
                    # Larger sizes reuse the warmed-up model: no second warm-up pass.
                    res = pipeline_figures(segmentor(name), size, repeats=r,
                                           warmup=w if i == 0 else 0,
                                           top_n=plan.top_n if i == 0 else 0,
                                           refine=i == 0)
                    results.setdefault("pipeline", {})[f"{label}_{size}"] = dict(res, clip=name)
                    figures.append(_figure(f"pipeline / CLIP trunk, {label} {name} {size}px",
                                           res["pipeline_over_trunk"], key="pipeline_over_trunk"))
                    figures.append(_figure(
                        f"Mask-Adapter share at {res['num_masks']} masks, {label} {size}px",
                        res["adapter_share"], "", key="adapter_share"))
                    if "pipeline_top_n_over_trunk" in res:
                        figures.append(_figure(
                            f"pipeline (top {plan.top_n} masks classified) / trunk, {label} "
                            f"{size}px", res["pipeline_top_n_over_trunk"],
                            key="pipeline_over_trunk"))
                    if "refined_over_pipeline" in res:
                        figures.append(_figure(
                            f"pipeline with masks refined at {size}px / pipeline, {label}",
                            res["refined_over_pipeline"]))
                        figures.append(_figure(
                            f"... refined with MASK_REFINE.SUBSAMPLE 2 / pipeline, {label}",
                            res["refined_fast_over_pipeline"]))
        if "crop" in sections:
            log(f"crop-and-classify vs pipeline ({plan.crop_clip}, {plan.crop_size}px)")
            base = segmentor(plan.crop_clip)
            fused = build_fused_segmentor(base, plan.crop_clip, num_queries=plan.num_masks,
                                          device=str(dev))
            res = crop_vs_pipeline(base, plan.crop_size, repeats=r, warmup=0, fused=fused)
            del fused
            results["crop"] = dict(res, clip=plan.crop_clip)
            figures.append(_figure(f"crop-and-classify / mmmask pipeline, {res['num_masks']} "
                                   f"masks, {plan.crop_size}px", res["crop_over_pipeline"],
                                   key="crop_over_pipeline"))
            figures.append(_figure(f"pipeline + MaskCrop fusion / pipeline, {res['num_masks']} "
                                   f"masks, {plan.crop_size}px", res["fusion_over_pipeline"]))
        if "sam" in sections:
            log(f"SAM automatic path ({plan.sam_size}px)")
            sam = build_sam_generator(list(plan.sam_opts), device=str(dev))
            res = sam_figures(sam, segmentor(plan.clips[0][1]), random_image(plan.sam_size, 2),
                              repeats=r, warmup=w)
            results["sam"] = dict(res, naming_clip=plan.clips[0][1])
            figures.append(_figure("SAM automatic: mmmask / SamAutomaticMaskGenerator",
                                   res["mmmask_over_official"], key="mmmask_over_official"))
            figures.append(_figure(f"naming {res['num_masks']} SAM masks, share of SAM+naming",
                                   res["naming_share"], ""))
        if "cm3" in sections:
            from mmmask.cm3.model import CM3Config

            log("CM3 KV cache vs recompute")
            res = cm3_figures(CM3Config(**plan.cm3), repeats=r, warmup=w, device=str(dev))
            results["cm3"] = res
            figures.append(_figure(f"CM3 KV cache / recompute tokens/s ({res['new_tokens']} "
                                   "image tokens)", res["speedup"], key="speedup"))
            figures.append(_figure("CM3 KV cache tokens/s", res["kv_cache_tokens_per_s"], "tok/s"))
        if "text" in sections:
            log(f"text classifier ({plan.text_clip})")
            res = text_figures(plan.text_clip, benchmark_prompts(), repeats=r, warmup=w,
                               device=str(dev))
            results["text"] = res
            figures.append(_figure(f"text: padded-77 / truncated, {res['num_prompts']} prompts",
                                   res["padded_over_truncated"], key="padded_over_truncated"))
            figures.append(_figure("text: padded-77 / cached", res["padded_over_cached"]))
            figures.append(_figure("text: max |padded - truncated| embedding",
                                   res["max_abs_diff"], ""))
        if "eval" in sections:
            log("evaluation throughput")
            res = eval_figures(size=plan.eval_size, repeats=max(r, 3), warmup=w)
            results["eval"] = res
            figures.append(_figure(f"mIoU accumulation, {res['num_classes']} classes",
                                   res["megapixels_per_s"], "MP/s"))
        if "shipped" in sections:
            log(f"shipped Shapes-OV segmenter, {plan.shipped_images} val images per setting")
            res = shipped_settings_figures(plan.shipped_images, repeats=r, warmup=w,
                                           device=str(dev))
            results["shipped"] = res
            if "skipped" in res:
                log(f"shipped section skipped: {res['skipped']}")
            for k, ratio in res.get("shipped_over_without", {}).items():
                figures.append(_figure(f"shipped Shapes-OV model / the same without its {k}",
                                       ratio))
    if "memory" in sections:
        name = plan.clips[0][1]
        log(f"peak memory of one inference ({name}, {plan.memory_size}px)")
        res = peak_memory(name, plan.memory_size, num_queries=plan.num_masks, device=str(dev))
        results["memory"] = dict(res, clip=name)
        figures.append(_figure(f"inference peak memory, {name} {plan.memory_size}px "
                               f"({res['method']})", res["inference_peak_mb"], "MiB"))
    log("done")
    return {"machine": machine_info(dev), "mode": "quick" if plan is QUICK else "full",
            "plan": {k: v for k, v in plan.__dict__.items()},
            "elapsed_s": time.perf_counter() - start, "results": results, "figures": figures}


def format_table(report: dict) -> str:
    """The headline figures as a Markdown table."""
    lines = ["| figure | value | target | met |", "|---|---|---|---|"]
    for f in report["figures"]:
        v = f["value"]
        text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        unit = f" {f['unit']}" if f["unit"] and f["unit"] != "x" else ("x" if f["unit"] else "")
        met = "" if "met" not in f else ("yes" if f["met"] else "**no**")
        lines.append(f"| {f['figure']} | {text}{unit} | {f.get('target', '')} | {met} |")
    return "\n".join(lines)
