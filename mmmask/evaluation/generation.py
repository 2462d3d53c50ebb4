"""Small metrics for the generative half: PSNR, codebook usage, caption attribute accuracy."""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from .evaluator import to_numpy

__all__ = ["psnr", "codebook_usage", "attribute_accuracy", "caption_mentions"]


def psnr(img_a: Any, img_b: Any, max_value: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB) of two images of the same shape (any layout).

    ``max_value`` defaults to 255 when either image has an integer dtype, else 1.0 (images in
    [0, 1]). Identical images give ``inf``.
    """
    a, b = to_numpy(img_a), to_numpy(img_b)
    if a.shape != b.shape:
        raise ValueError(f"Images differ in shape: {a.shape} vs {b.shape}.")
    if max_value is None:
        integer = np.issubdtype(a.dtype, np.integer) or np.issubdtype(b.dtype, np.integer)
        max_value = 255.0 if integer else 1.0
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(max_value**2 / mse)


def codebook_usage(ids: Any, codebook_size: int) -> tuple[float, float]:
    """Fraction of the ``codebook_size`` codes that occur in ``ids`` (any shape) and the perplexity
    ``exp(entropy)`` of their empirical distribution (1 = one code, ``codebook_size`` = uniform)."""
    if codebook_size <= 0:
        raise ValueError(f"codebook_size must be positive; got {codebook_size}.")
    arr = to_numpy(ids).astype(np.int64).reshape(-1)
    if arr.size == 0:
        raise ValueError("No token ids given.")
    if arr.min() < 0 or arr.max() >= codebook_size:
        raise ValueError(f"Token ids must lie in [0, {codebook_size}); got "
                         f"[{arr.min()}, {arr.max()}].")
    counts = np.bincount(arr, minlength=codebook_size)
    p = counts[counts > 0] / arr.size
    entropy = float(-(p * np.log(p)).sum())
    return float((counts > 0).sum() / codebook_size), math.exp(entropy)


def _default_synonyms() -> dict[str, tuple[str, ...]]:
    from mmmask.data.shapes import COLOURS, SHAPES

    syn = {c: (c, *extra) for c, (_, extra) in COLOURS.items()}
    syn.update({s: (s, *extra) for s, extra in SHAPES.items()})
    return syn


def caption_mentions(caption: str, colour: str | None, shape: str | None,
                     synonyms: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Whether ``caption`` contains the phrase "<colour> <shape>" (either word may be a synonym;
    case-insensitive, whole words). With ``shape`` None only the colour word is looked for, with
    ``colour`` None only the shape word."""
    if colour is None and shape is None:
        raise ValueError("caption_mentions needs a colour, a shape or both")
    syn = _default_synonyms() if synonyms is None else synonyms
    colours = (syn.get(colour, (colour,)) or (colour,)) if colour is not None else ("",)
    shapes = (syn.get(shape, (shape,)) or (shape,)) if shape is not None else ("",)
    text = " ".join(caption.lower().split())
    for c in colours:
        for s in shapes:
            phrase = " ".join(w for w in (c.lower(), s.lower()) if w)
            if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text):
                return True
    return False


def attribute_accuracy(captions: Sequence[str], expected: Sequence[Sequence[tuple[str, str]]],
                       synonyms: Mapping[str, Sequence[str]] | None = None,
                       part: str = "both") -> float:
    """Fraction of objects whose colour+shape phrase appears in their image's generated caption
    (``part="colour"`` or ``"shape"``: whose colour word, or shape word, appears anywhere in it).

    Args:
        captions: one generated caption per image ("a red star and a blue ring on grass").
        expected: per image, the ``(colour, shape)`` pairs of its objects.
        synonyms: word -> accepted words (itself included); default: the Shapes-OV synonyms
            ("purple" also matches "violet", "ring" also "donut", ...).
    """
    if part not in ("both", "colour", "shape"):
        raise ValueError(f"part must be 'both', 'colour' or 'shape'; got {part!r}")
    if len(captions) != len(expected):
        raise ValueError(f"{len(captions)} captions for {len(expected)} expected object lists.")
    total = sum(len(objs) for objs in expected)
    if total == 0:
        raise ValueError("No expected objects: attribute accuracy is undefined.")
    syn = _default_synonyms() if synonyms is None else synonyms
    keep_c, keep_s = part in ("both", "colour"), part in ("both", "shape")
    hits = sum(caption_mentions(cap, c if keep_c else None, s if keep_s else None, syn)
               for cap, objs in zip(captions, expected) for c, s in objs)
    return hits / total
