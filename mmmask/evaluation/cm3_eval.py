"""Held-out measurements of the CM3 half on Shapes-OV.

- VQ tokenizer: reconstruction PSNR, codebook usage and code perplexity.
- Captioning: share of the objects whose colour and shape the caption names.
- Text-to-image: share of generated images in which the segmenter finds the prompted class as
  the largest thing segment (the shipped segmenter is the judge).
"""

from __future__ import annotations

import numpy as np
import torch

from mmmask.data import shapes

from .generation import attribute_accuracy, codebook_usage, psnr

__all__ = ["evaluate_cm3"]


def _objects(sample) -> list[tuple[str, str]]:
    return [tuple(shapes.CLASS_NAMES[d["category_id"]].split(" ", 1)) for d in sample.instances]


@torch.no_grad()
def evaluate_cm3(generator, segmenter=None, num_images: int = 100, num_generated: int = 32,
                 seed: int = 4242) -> dict:
    """``generator``: a ``CM3Generator``; ``segmenter``: a ``SegmentationPredictor`` or None."""
    size = generator.vq.image_size
    samples = [shapes.render_sample(seed, "test", i, size) for i in range(num_images)]
    psnrs, codes = [], []
    for s in samples:
        ids = generator.encode_image(s.image)
        codes.append(ids.flatten().cpu())
        psnrs.append(psnr(s.image, generator.decode_codes(ids)))
    usage, perplexity = codebook_usage(torch.cat(codes), generator.vocab.num_image_codes)
    captions = [generator.caption(s.image) for s in samples]
    result = {
        "vq_psnr_db": float(np.mean(psnrs)),
        "codebook_usage": 100.0 * usage,
        "code_perplexity": float(perplexity),
        "caption_attribute_accuracy": 100.0 * attribute_accuracy(captions,
                                                                 [_objects(s) for s in samples]),
        "caption_examples": captions[:5],
        "num_images": num_images,
    }
    if segmenter is not None:
        rng = np.random.default_rng(seed)
        hits = 0
        thing_ids = [i for i, t in enumerate(shapes.IS_THING) if t]
        for k in range(num_generated):
            cid = int(rng.choice(thing_ids))
            name = shapes.CLASS_NAMES[cid]
            image = generator.text_to_image(f"a {name}", seed=k)
            res = segmenter.predict(image, task="semantic")
            things = [s for s in res.segments if shapes.IS_THING[s["class_id"]]]
            if things and max(things, key=lambda s: s["mask"].sum())["class_id"] == cid:
                hits += 1
        result["text_to_image_accuracy"] = 100.0 * hits / num_generated
        result["num_generated"] = num_generated
    return result
