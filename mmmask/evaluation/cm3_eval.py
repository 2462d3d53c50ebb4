"""Held-out measurements of the CM3 half on Shapes-OV.

- VQ tokenizer: reconstruction PSNR, codebook usage and code perplexity.
- Captioning: share of the objects whose colour and shape the caption names (and either half).
- What the VQ tokens keep: share of the held-out objects the segmenter names right from their
  ground-truth masks, on the original images and on their VQ reconstructions (an upper bound of
  sorts for captioning from tokens).
- Text-to-image: share of generated images in which the segmenter finds the prompted class as
  the largest thing segment (the shipped segmenter is the judge), and the share in which that
  segment has the prompted colour (any shape).
- Infilling: an object's token box regenerated with context on both sides (CM3 prompt) vs from
  the left context only (what a causal-only decoder can do).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmmask.data import shapes

from .generation import attribute_accuracy, codebook_usage, psnr

__all__ = ["evaluate_cm3", "evaluate_infilling", "vq_shape_probe"]


def _objects(sample) -> list[tuple[str, str]]:
    return [tuple(shapes.CLASS_NAMES[d["category_id"]].split(" ", 1)) for d in sample.instances]


def _object_naming(segmenter, samples, recons) -> dict:
    """Percent of objects named right from their masks on the originals and VQ reconstructions."""
    from mmmask.data.vocab import Vocabulary

    vocab = Vocabulary.from_names(list(shapes.CLASS_SYNONYMS))
    right = {"original": 0, "reconstructed": 0}
    total = 0
    for s, rec in zip(samples, recons):
        objs = [d for d in s.instances if d["mask"].any()]  # fully occluded ones have no pixels
        if not objs:
            continue
        masks = np.stack([d["mask"] for d in objs])
        truth = np.array([d["category_id"] for d in objs])
        total += len(objs)
        for key, img in (("original", s.image), ("reconstructed", rec)):
            probs, _ = segmenter.classify_masks(img, masks, vocab)
            right[key] += int((np.asarray(probs).argmax(1) == truth).sum())
    return {f"object_naming_{k}": 100.0 * v / max(1, total) for k, v in right.items()}


def _colour(class_id: int) -> str:
    return shapes.CLASS_NAMES[class_id].split(" ", 1)[0]


@torch.no_grad()
def evaluate_cm3(generator, segmenter=None, num_images: int = 100, num_generated: int = 32,
                 seed: int = 4242) -> dict:
    """``generator``: a ``CM3Generator``; ``segmenter``: a ``SegmentationPredictor`` or None."""
    size = generator.vq.image_size
    samples = [shapes.render_sample(seed, "test", i, size) for i in range(num_images)]
    psnrs, codes, recons = [], [], []
    for s in samples:
        ids = generator.encode_image(s.image)
        codes.append(ids.flatten().cpu())
        recons.append(generator.decode_codes(ids))
        psnrs.append(psnr(s.image, recons[-1]))
    usage, perplexity = codebook_usage(torch.cat(codes), generator.vocab.num_image_codes)
    captions = [generator.caption(s.image) for s in samples]
    expected = [_objects(s) for s in samples]
    result = {
        "vq_psnr_db": float(np.mean(psnrs)),
        "codebook_usage": 100.0 * usage,
        "code_perplexity": float(perplexity),
        "caption_attribute_accuracy": 100.0 * attribute_accuracy(captions, expected),
        # the two halves: the object's colour word, or its shape word, anywhere in the caption
        "caption_colour_accuracy": 100.0 * attribute_accuracy(captions, expected, part="colour"),
        "caption_shape_accuracy": 100.0 * attribute_accuracy(captions, expected, part="shape"),
        "caption_examples": captions[:5],
        "num_images": num_images,
    }
    if segmenter is not None:
        result.update(_object_naming(segmenter, samples, recons))
        rng = np.random.default_rng(seed)
        hits = colour_hits = 0
        thing_ids = [i for i, t in enumerate(shapes.IS_THING) if t]
        for k in range(num_generated):
            cid = int(rng.choice(thing_ids))
            name = shapes.CLASS_NAMES[cid]
            image = generator.text_to_image(f"a {name}", seed=k)
            res = segmenter.predict(image, task="semantic")
            things = [s for s in res.segments if shapes.IS_THING[s["class_id"]]]
            if things:
                top = max(things, key=lambda s: s["mask"].sum())["class_id"]
                hits += top == cid
                colour_hits += _colour(top) == _colour(cid)
        result["text_to_image_accuracy"] = 100.0 * hits / num_generated
        result["text_to_image_colour_accuracy"] = 100.0 * colour_hits / num_generated
        result["num_generated"] = num_generated
    return result


def _span_positions(spans: list[tuple[int, int]]) -> list[int]:
    return [p for s, e in spans for p in range(s, e)]


@torch.no_grad()
def evaluate_infilling(generator, num_images: int = 100, seed: int = 4242) -> dict:
    """Image infilling with and without right context (greedy decoding, captions as alt text).

    For each held-out scene the token cells under its first object's box are cut out (the same
    row-major spans as ``CM3Generator.infill_codes``) and regenerated in two ways:

    - ``masked``: the CM3 prompt, ``<img alt=.. src="LEFT <mask:0> RIGHT .."> <mask:0>``, so the
      spans see the image tokens on both sides;
    - ``left``: plain left-to-right continuation from the tokens before the first span (all a
      causal-only model can do without enumerating candidates).

    Reports, per mode, the share of span tokens equal to the original codes and the PSNR of the
    decoded region against the original pixels (the VQ round trip of the region is the ceiling).
    """
    from mmmask.cm3.documents import build_document
    from mmmask.cm3.generate import IncrementalDecoder
    from mmmask.cm3.regions import cells_to_spans, mask_to_cells

    size = generator.vq.image_size
    vocab, model = generator.vocab, generator.model
    allowed = vocab.image_mask().to(generator.device)
    hits = {"masked": 0, "left": 0}
    region_psnr: dict[str, list[float]] = {"masked": [], "left": [], "vq_round_trip": []}
    total = 0
    for i in range(num_images):
        s = shapes.render_sample(seed, "test", i, size)
        ys, xs = np.nonzero(s.instances[0]["mask"]) if s.instances else ([], [])
        if len(ys) == 0:
            continue
        box = np.zeros(s.image.shape[:2], bool)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        codes = generator.encode_image(s.image)  # (h, w)
        cells = mask_to_cells(box, generator.grid)
        spans = cells_to_spans(cells, min(generator.max_spans, vocab.num_sentinels))
        pos = _span_positions(spans)
        truth = codes.reshape(-1)[pos]
        total += len(pos)
        caption = generator.infill_alt_text(s.caption, len(spans))  # the same for both modes
        # Both sides: the CM3 infilling prompt (no guidance, greedy).
        filled = generator.infill_codes(codes, cells, caption, cfg_scale=1.0, temperature=0.0)
        out = {"masked": filled}
        # Left only: continue the document from the first span's start.
        doc = build_document(vocab, caption, codes.reshape(-1))
        off = doc.image_span[0]
        start, end = spans[0][0], spans[-1][1]
        dec = IncrementalDecoder(model, generator._tensor(doc.ids[: off + start]))
        new = dec.sample(end - start, temperature=0.0, allowed_ids=allowed)[0]
        left = codes.reshape(-1).clone()
        left[start:end] = new.to(left.device) - vocab.image_offset
        out["left"] = left.reshape(codes.shape)
        for mode, c in out.items():
            hits[mode] += int((c.reshape(-1)[pos] == truth).sum())
            img = generator.decode_codes(c, s.image.shape[:2])
            region_psnr[mode].append(psnr(s.image[box], img[box]))
        recon = generator.decode_codes(codes, s.image.shape[:2])
        region_psnr["vq_round_trip"].append(psnr(s.image[box], recon[box]))
    if total == 0:
        raise ValueError("No scene with an object to infill")
    return {
        "infill_token_accuracy_masked": 100.0 * hits["masked"] / total,
        "infill_token_accuracy_left": 100.0 * hits["left"] / total,
        "infill_region_psnr_masked_db": float(np.mean(region_psnr["masked"])),
        "infill_region_psnr_left_db": float(np.mean(region_psnr["left"])),
        "infill_region_psnr_vq_db": float(np.mean(region_psnr["vq_round_trip"])),
        "infill_tokens": total,
    }


def _probe_items(kind: str, n: int, seed: int, size: int):
    """``n`` probe images (uint8 Tensor[3, S, S]) and, per object, (image index, mask S x S, shape
    id). ``crop``: one large object per image; ``scene``: every visible object of a scene."""
    images, objects = [], []
    for i in range(n):
        if kind == "crop":
            img, _, cid = shapes.render_object_crop(seed, i, size)
            objects.append((i, None, cid % len(shapes.SHAPES)))
        else:
            sample = shapes.render_sample(seed, "captions", i, size)
            img = sample.image
            objects += [(i, d["mask"], d["category_id"] % len(shapes.SHAPES))
                        for d in sample.instances if d["mask"].any()]
        images.append(torch.from_numpy(img).permute(2, 0, 1))
    return images, objects


def vq_shape_probe(encode, num_train: int = 8000, num_test: int = 2000, epochs: int = 6,
                   size: int = 64, seed: int = 7, num_codes: int | None = None,
                   batch_size: int = 128, kind: str = "crop") -> dict:
    """How much of an object's shape its image tokens keep.

    ``encode`` maps uint8 images Tensor[B,3,S,S] to codes LongTensor[B,h,w] (a VQ tokenizer's
    ``encode``). A small conv net over learned code embeddings is trained on the objects of
    ``num_train`` images to name their shape (8 classes, chance 12.5 %) and tested on the objects
    of the next ``num_test`` images (drawn from ``seed``):

    - ``kind="crop"``: single-object crops (:func:`shapes.render_object_crop`, one large shape
      on one stuff class); the net pools over the whole grid;
    - ``kind="scene"``: every visible object of Shapes-OV scenes (what a caption has to name);
      the object's mask, averaged onto the token grid, is an extra input channel and the
      pooling weights, so the net is told where the object is and has to say what shape it is.

    Returns ``{"shape_accuracy": percent on the test objects after each epoch (list), "grid":
    [h, w], "kind", ...}``.
    """
    if kind not in ("crop", "scene"):
        raise ValueError(f"kind must be 'crop' or 'scene'; got {kind!r}")
    images, objects = _probe_items(kind, num_train + num_test, seed, size)
    with torch.no_grad():
        codes = torch.cat([encode(torch.stack(images[k:k + 256])).long().cpu()
                           for k in range(0, len(images), 256)])
    grid = tuple(codes.shape[-2:])
    image_of = torch.tensor([i for i, _, _ in objects])
    y = torch.tensor([c for _, _, c in objects])
    if kind == "scene":  # each object's share of every token cell
        where = torch.stack([F.adaptive_avg_pool2d(torch.from_numpy(m).float()[None], grid)[0]
                             for _, m, _ in objects])
    else:
        where = torch.ones(len(objects), *grid)
    num_codes = int(codes.max()) + 1 if num_codes is None else int(num_codes)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded probe weights, the caller's RNG untouched
        torch.manual_seed(seed)
        probe = _ShapeProbe(num_codes, len(shapes.SHAPES), finer=grid[-1] > 8,
                            located=kind == "scene")
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3)
    train = (image_of < num_train).nonzero()[:, 0]
    test = (image_of >= num_train).nonzero()[:, 0]
    if len(train) == 0 or len(test) == 0:
        raise ValueError("The probe needs objects in both the training and the test images")
    accuracy = []
    for _ in range(epochs):
        probe.train()
        for idx in train[torch.randperm(len(train), generator=g)].split(batch_size):
            loss = F.cross_entropy(probe(codes[image_of[idx]], where[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        probe.eval()
        with torch.no_grad():
            pred = probe(codes[image_of[test]], where[test]).argmax(1)
            accuracy.append(100.0 * (pred == y[test]).float().mean().item())
    return {"shape_accuracy": accuracy, "grid": list(grid), "kind": kind, "num_train": num_train,
            "num_test": num_test, "num_test_objects": len(test), "epochs": epochs}


class _ShapeProbe(nn.Module):
    """Code embeddings (+ the object's cell mask when ``located``) -> two 3x3 convs (one more
    stride-2 stage for a finer grid, so both grids see the same image extent) -> pooling (over
    the object's cells when ``located``, else global) -> classes."""

    def __init__(self, num_codes: int, num_classes: int, finer: bool, located: bool) -> None:
        super().__init__()
        self.located = located
        self.embed = nn.Embedding(num_codes, 32)
        layers = [nn.Conv2d(32 + int(located), 64, 3, padding=1), nn.GELU(),
                  nn.Conv2d(64, 64, 3, padding=1), nn.GELU()]
        if finer:
            layers += [nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, codes: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """codes LongTensor[B, h, w], where Tensor[B, h, w] (object share per cell; all ones
        for a crop) -> logits."""
        x = self.embed(codes).permute(0, 3, 1, 2)  # (B, C, h, w)
        if self.located:
            x = torch.cat([x, where[:, None]], dim=1)
        x = self.body(x)
        w = F.adaptive_avg_pool2d(where[:, None], x.shape[-2:])  # (B, 1, h', w')
        pooled = (x * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1e-6)
        return self.head(pooled)
