"""Segment-then-edit: the segmenter finds a label's region, CM3 regenerates it from a prompt.

The two halves of mmmask meet here::

    seg = SegmentationPredictor.from_files()                # open-vocabulary segmenter
    gen = CM3Generator.from_files()                         # CM3 generator
    edited, mask = segment_then_edit(image, "red star", "a blue ring", seg, gen, seed=0)

The segmenter runs once, on the semantic task, with its default vocabulary (plus the target
label when the vocabulary does not already name it), so the target competes with every other
class for its pixels.
"""

from __future__ import annotations

import numpy as np

from mmmask.data.vocab import Vocabulary

from .api import as_rgb_uint8

__all__ = ["segment_then_edit", "label_mask", "vocabulary_with_label"]


def _clean_label(label: str) -> str:
    text = " ".join(str(label or "").split())
    if not text:
        raise ValueError("The target label is empty: name a class, e.g. 'red star'")
    return text


def vocabulary_with_label(vocab: Vocabulary, label: str) -> tuple[Vocabulary, int]:
    """``vocab`` plus ``label`` as a new class unless one of its synonyms already names it
    (case-insensitive). Returns (vocabulary, index of the class of ``label``)."""
    label = _clean_label(label)
    key = label.lower()
    for i, syns in enumerate(vocab.classes):
        if any(s.lower() == key for s in syns):
            return vocab, i
    seen = None if vocab.seen is None else (*vocab.seen, False)
    return Vocabulary((*vocab.classes, (label,)), seen), len(vocab.classes)


def label_mask(image: np.ndarray, label: str, segmenter) -> np.ndarray:
    """Bool HxW mask of ``label`` in ``image`` (uint8 HxWx3) by semantic segmentation.

    ``segmenter`` is a :class:`mmmask.predictor.SegmentationPredictor` (anything with a
    ``default_vocabulary`` and ``predict(image, vocab, task=...)`` returning a result with
    ``semantic`` HxW class ids and ``segments``). Raises ``ValueError`` naming the labels found
    when ``label`` covers no pixel.
    """
    label = _clean_label(label)
    vocab, idx = vocabulary_with_label(segmenter.default_vocabulary, label)
    result = segmenter.predict(image, vocab, task="semantic")
    if result.semantic is None:
        raise RuntimeError("The segmenter returned no semantic map for the semantic task")
    mask = np.asarray(result.semantic) == idx
    if not mask.any():
        found = sorted({s["label"] for s in result.segments}) or ["nothing"]
        raise ValueError(f"label {label!r} not found in the image; found: {', '.join(found)}")
    return mask


def segment_then_edit(image: np.ndarray, label: str, prompt: str, segmenter, generator,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Regenerate the region of ``label`` in ``image`` from ``prompt``.

    Args:
        image: uint8 HxWx3 RGB (HxW gray and HxWx4 RGBA are converted).
        label: class to replace, e.g. "red star" (a synonym of a default class works too).
        prompt: text describing the new content (non-empty).
        segmenter: a ``SegmentationPredictor``; generator: a ``CM3Generator``.
        seed: sampling seed of the generator.

    Returns:
        (edited uint8 HxWx3, bool HxW mask of the region that was regenerated); pixels outside
        the mask are the input's.
    """
    if not prompt or not str(prompt).strip():
        raise ValueError("The edit needs a non-empty prompt describing the new content")
    img = as_rgb_uint8(image)
    mask = label_mask(img, label, segmenter)
    edited = generator.edit_region(img, mask, prompt, seed=seed)
    return edited, mask
