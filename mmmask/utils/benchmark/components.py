"""Component figures: SAM automatic path, CM3 KV cache, text classifier, evaluation throughput."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .timing import time_side_by_side

__all__ = ["build_sam_generator", "sam_figures", "cm3_figures", "text_figures", "eval_figures",
           "benchmark_prompts"]


def build_sam_generator(opts: list, device: str = "cpu"):
    """A ``SAMMaskGenerator`` (random weights) from MODEL.SAM.* overrides ``opts``."""
    from mmmask.config import get_cfg
    from mmmask.registry import MASK_GENERATOR_REGISTRY

    import mmmask.modeling  # noqa: F401  (registers "SAM")

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.SAM.CHECKPOINT", ""] + list(opts))
    return MASK_GENERATOR_REGISTRY.get("SAM")(cfg).to(device).eval()


@torch.no_grad()
def _name_masks(model, image: torch.Tensor, masks: torch.Tensor) -> dict:
    """Name SAM masks (float [1, Q, H, W]) with the segmentor's classifier; semantic output."""
    batch = [{"image": image, "height": int(image.shape[1]), "width": int(image.shape[2])}]
    images, sizes = model._images(batch)
    if masks.shape[1] == 0:
        masks = masks.new_zeros(1, 1, *masks.shape[-2:])
    pad = (0, images.shape[-1] - masks.shape[-1], 0, images.shape[-2] - masks.shape[-2])
    ext = F.pad(masks, pad)  # [1, Q, H_pad, W_pad]
    probs, objectness, logits = model.predict_masks(images, ext)
    return model.postprocess(probs[0], objectness[0], logits[0], sizes[0],
                             tuple(images.shape[-2:]), sizes[0])


@torch.no_grad()
def sam_figures(sam_gen, model, image: torch.Tensor, *, repeats: int, warmup: int) -> dict:
    """mmmask's SAM automatic path vs ``SamAutomaticMaskGenerator`` (same Sam, same settings),
    and the share of naming the masks (CLIP trunk + Mask-Adapter + post-processing) in the
    whole SAM-then-name path. ``image``: uint8 [3, H, W]."""
    from segment_anything import SamAutomaticMaskGenerator

    official = SamAutomaticMaskGenerator(sam_gen.sam, **sam_gen.amg_settings)
    np_image = image.permute(1, 2, 0).cpu().numpy()
    ref = official.generate(np_image)
    masks, _ = sam_gen.proposals(np_image)
    same = len(ref) == masks.shape[1] and all(
        np.array_equal(r["segmentation"], m)
        for r, m in zip(sorted(ref, key=lambda r: -r["predicted_iou"]),
                        masks[0].bool().cpu().numpy()))
    image_d = image.to(model.device)
    masks_d = masks.to(model.device)
    t = time_side_by_side({
        "official_amg": lambda: official.generate(np_image),
        "mmmask_sam": lambda: sam_gen.proposals(np_image),
        "naming": lambda: _name_masks(model, image_d, masks_d),
    }, repeats=repeats, warmup=warmup, device=model.device)
    sam_s, name_s = t["mmmask_sam"].median, t["naming"].median
    return {"size": int(image.shape[-1]), "num_masks": int(masks.shape[1]),
            "same_masks_as_official": bool(same), "settings": dict(sam_gen.amg_settings),
            "timings": {k: v.as_dict() for k, v in t.items()},
            "mmmask_over_official": sam_s / t["official_amg"].median,
            "naming_share": name_s / (sam_s + name_s)}


@torch.no_grad()
def cm3_figures(config, *, prompt_len: int = 16, new_tokens: int = 256, repeats: int,
                warmup: int, device: str = "cpu") -> dict:
    """Tokens/s of :func:`mmmask.cm3.generate.generate` (KV cache) vs ``generate_reference``
    (recompute) for ``new_tokens`` sampled tokens of a random CM3; also checks equal samples."""
    from mmmask.cm3.generate import generate, generate_reference
    from mmmask.cm3.model import CM3

    if prompt_len + new_tokens - 1 > config.block_size:
        raise ValueError(f"block_size {config.block_size} < prompt {prompt_len} + {new_tokens}")
    torch.manual_seed(0)
    model = CM3(config).to(device).eval()
    prompt = torch.randint(0, config.vocab_size, (1, prompt_len), device=device)

    def run(fn, n=new_tokens):
        return fn(model, prompt, n, temperature=1.0, top_k=32,
                  generator=torch.Generator(device=device).manual_seed(0))

    same = bool(torch.equal(run(generate, 32), run(generate_reference, 32)))
    for _ in range(warmup):  # short warm-up: the recompute path is costly
        run(generate, 16), run(generate_reference, 16)
    t = time_side_by_side({"kv_cache": lambda: run(generate),
                           "recompute": lambda: run(generate_reference)},
                          repeats=repeats, warmup=0, device=device)
    return {"new_tokens": new_tokens, "prompt_tokens": prompt_len,
            "config": {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd",
                                                       "block_size", "vocab_size")},
            "same_tokens_first_32": same,
            "timings": {k: v.as_dict() for k, v in t.items()},
            "kv_cache_tokens_per_s": new_tokens / t["kv_cache"].median,
            "recompute_tokens_per_s": new_tokens / t["recompute"].median,
            "speedup": t["recompute"].median / t["kv_cache"].median}


def benchmark_prompts(templates: int = 3) -> list[str]:
    """The 70 Shapes-OV class names x the first ``templates`` ViLD-style templates (210)."""
    from mmmask.data.shapes import CLASS_NAMES
    from mmmask.modeling.clip.text import PROMPT_TEMPLATES

    return [t.format(n) for n in CLASS_NAMES for t in PROMPT_TEMPLATES["imagenet"][:templates]]


@torch.no_grad()
def text_figures(clip_name: str, prompts: list[str], *, repeats: int, warmup: int,
                 device: str = "cpu") -> dict:
    """Text classifier: prompts encoded up to the longest prompt (as ``TextEncoder`` does) vs
    padded to the full context (77), the max abs difference of the normalised embeddings, and
    the cached re-encoding of the same vocabulary."""
    from mmmask.modeling.clip.models import create_clip, tokenizer_for
    from mmmask.modeling.clip.text import TextEncoder

    clip, _, _ = create_clip(clip_name, "")
    clip = clip.to(device).eval()
    tokenizer = tokenizer_for(clip_name)
    enc = TextEncoder(clip, tokenizer, ("{}",), cache_size=len(prompts) + 1,
                      batch_size=len(prompts))
    tokens = tokenizer(prompts).to(device)
    for _ in range(warmup):
        enc.encode_tokens(tokens[:8], truncate=False), enc.encode_tokens(tokens[:8])
    last: dict[str, torch.Tensor] = {}

    def encode(name: str, truncate: bool):
        last[name] = enc.encode_tokens(tokens, truncate=truncate)

    def cold_cache():
        enc.clear_cache()
        return enc.encode_prompts(prompts)

    t = time_side_by_side({"padded_77": lambda: encode("padded", False),
                           "truncated": lambda: encode("truncated", True),
                           "truncated_cold_cache": cold_cache,
                           "cached": lambda: enc.encode_prompts(prompts)},
                          repeats=repeats, warmup=0, device=device)
    diff = (F.normalize(last["padded"], dim=-1) - F.normalize(last["truncated"], dim=-1)).abs()
    longest = int((tokens != 0).sum(dim=1).max())
    return {"clip": clip_name, "num_prompts": len(prompts), "longest_prompt_tokens": longest,
            "context_length": int(tokens.shape[1]),
            "timings": {k: v.as_dict() for k, v in t.items()},
            "padded_over_truncated": t["padded_77"].median / t["truncated"].median,
            "padded_over_cached": t["padded_77"].median / t["cached"].median,
            "max_abs_diff": float(diff.max())}


def eval_figures(*, num_classes: int = 150, size: int = 512, num_images: int = 4,
                 repeats: int, warmup: int) -> dict:
    """Megapixels/s of ``SemSegEvaluator.process`` on score maps [C, H, W] (argmax included)."""
    from mmmask.evaluation.semantic import SemSegEvaluator

    g = torch.Generator().manual_seed(0)
    inputs, outputs = [], []
    for _ in range(num_images):
        gt = torch.randint(0, num_classes, (size, size), generator=g)
        gt[torch.rand(size, size, generator=g) < 0.05] = 255
        inputs.append({"sem_seg": gt})
        outputs.append({"sem_seg": torch.rand(num_classes, size, size, generator=g)})
    ev = SemSegEvaluator(num_classes)
    t = time_side_by_side({"process": lambda: ev.process(inputs, outputs)},
                          repeats=repeats, warmup=warmup)["process"]
    mp = num_images * size * size / 1e6
    return {"num_classes": num_classes, "size": size, "num_images": num_images,
            "timings": {"process": t.as_dict()}, "megapixels_per_s": mp / t.median}
