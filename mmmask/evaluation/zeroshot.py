"""Zero-shot naming on Shapes-OV: how well a CLIP names every class, and how well a segmenter's
classifier names ground-truth masks.

``shapes_zero_shot`` reports accuracy over the 64 thing classes (seen and unseen separately) on
object crops (or objects cut from scenes) and how often the colour and the shape alone are right,
the two halves a compositional class name needs. ``shapes_mask_naming`` feeds the ground-truth
segments of held-out scenes to a predictor's mask classifier: the classification upper bound of
the segmenter (its masks perfect).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmmask.data import shapes
from mmmask.data.vocab import Vocabulary

__all__ = ["shapes_zero_shot", "shapes_mask_naming"]


@torch.no_grad()
def shapes_zero_shot(backbone, num_images: int = 1000, seed: int = 12345, size: int = 64,
                     batch_size: int = 250, kind: str = "crop") -> dict:
    """Accuracy (percent) of ``backbone`` (a ``CLIPBackbone``) on held-out object images:
    ``kind`` "crop" (one object on one stuff class) or "region" (one object cut from a scene,
    with its neighbours and occluders)."""
    render = {"crop": shapes.render_object_crop, "region": shapes.render_object_region}.get(kind)
    if render is None:
        raise ValueError(f"Unknown kind {kind!r}; valid: crop, region")
    from mmmask.modeling.clip.text import synonym_index

    names = shapes.CLASS_SYNONYMS[: shapes.NUM_THINGS]
    vocab = Vocabulary.from_names(names)
    text = backbone.encode_vocabulary(vocab)  # (S, D)
    syn = synonym_index(vocab)
    preds, labels = [], []
    for start in range(0, num_images, batch_size):
        crops = [render(seed, 10**7 + i, size)
                 for i in range(start, min(num_images, start + batch_size))]
        x = torch.stack([torch.from_numpy(c[0]).permute(2, 0, 1) for c in crops])
        x = backbone.normalize(x.to(backbone.pixel_mean.device))
        dense = backbone(x)["clip_dense"]
        emb = F.normalize(backbone.dense_to_embedding(dense.mean(dim=(2, 3))), dim=-1)
        sim = emb @ text.t()  # (N, S)
        per_class = sim.new_full((len(crops), len(vocab)), -2.0)
        per_class = per_class.scatter_reduce(1, syn.expand_as(sim), sim, reduce="amax")
        preds.append(per_class.argmax(1).cpu())
        labels += [c[2] for c in crops]
    pred = torch.cat(preds).numpy()
    lab = np.asarray(labels)
    seen = np.asarray([shapes.IS_SEEN[c] for c in lab])
    n_shapes = len(shapes.SHAPES)
    right = pred == lab
    return {
        "accuracy": 100.0 * right.mean(),
        "accuracy_seen": 100.0 * right[seen].mean(),
        "accuracy_unseen": 100.0 * right[~seen].mean(),
        "colour_accuracy": 100.0 * (pred // n_shapes == lab // n_shapes).mean(),
        "shape_accuracy": 100.0 * (pred % n_shapes == lab % n_shapes).mean(),
        "num_images": int(num_images),
        "kind": kind,
    }


def _rates(pred: np.ndarray, lab: np.ndarray) -> dict:
    things = lab < shapes.NUM_THINGS
    seen = np.asarray(shapes.IS_SEEN)[lab]
    right = pred == lab

    def pct(m):
        return 100.0 * float(right[m].mean()) if m.any() else float("nan")

    return {"things": pct(things), "things_seen": pct(things & seen),
            "things_unseen": pct(things & ~seen), "stuff": pct(~things)}


@torch.no_grad()
def shapes_mask_naming(predictor, num_images: int = 100, split: str = "val", seed: int = 0,
                       size: int = 128) -> dict:
    """Accuracy (percent) with which ``predictor`` (a ``SegmentationPredictor``) names the
    ground-truth segments of ``num_images`` Shapes-OV scenes against the full vocabulary.

    Every object and every stuff region is one mask; the classifier alone decides (the mask
    generator's in-vocabulary scores do not take part). Keys: ``things``, ``things_seen``,
    ``things_unseen``, ``stuff``, ``num_segments`` and ``thing_errors``: the wrongly named
    things by kind (``colour``, ``shape``, ``both``, ``stuff``) and the five most frequent
    shape mix-ups (``"hexagon -> circle": n``).
    """
    names = list(shapes.CLASS_SYNONYMS)
    vocab = Vocabulary.from_names(names)
    preds, labels = [], []
    for i in range(num_images):
        s = shapes.render_sample(seed, split, i, size)
        segs = [(d["mask"], d["category_id"]) for d in s.instances]
        segs += [(s.sem_seg == sid, int(sid)) for sid in np.unique(s.sem_seg)
                 if shapes.NUM_THINGS <= sid < len(names)]
        segs = [(m, c) for m, c in segs if m.any()]  # fully occluded objects have no pixels
        if segs:
            probs, _ = predictor.classify_masks(s.image, np.stack([m for m, _ in segs]), vocab)
            preds += probs.argmax(1).tolist()
            labels += [c for _, c in segs]
    out = _rates(np.asarray(preds), np.asarray(labels))
    out["num_segments"] = len(labels)
    out["thing_errors"] = _thing_errors(preds, labels)
    if hasattr(predictor, "encode_text"):
        mix_ups = out["thing_errors"]["shape_mix_ups"]
        out["shape_text_cosine"] = _shape_text_cosine(predictor, vocab, mix_ups)
        model = getattr(predictor, "model", None)
        if getattr(getattr(model, "crop_classifier", None), "text_tower", None) is not None:
            out["shape_text_cosine_crops"] = _shape_text_cosine(predictor, vocab, mix_ups, True)
    return out


def _shape_text_cosine(predictor, vocab: Vocabulary, mix_ups: dict[str, int],
                       crops: bool = False) -> dict[str, float]:
    """For each shape mix-up "a -> b": the cosine between the text embeddings of "<colour> a"
    and "<colour> b", averaged over the colours (how close CLIP's text side puts the names; with
    ``crops``, the crop classifier's own text tower)."""
    emb, _ = predictor.encode_text(vocab, crops=True) if crops else predictor.encode_text(vocab)
    index = {name: i for i, name in enumerate(shapes.CLASS_NAMES)}
    out = {}
    for pair in mix_ups:
        a, b = pair.split(" -> ")
        cos = [float(emb[index[f"{c} {a}"]] @ emb[index[f"{c} {b}"]]) for c in shapes.COLOURS]
        out[pair] = round(float(np.mean(cos)), 4)
    return out


def _thing_errors(preds: list[int], labels: list[int]) -> dict:
    """Wrongly named things by kind of mistake, and the most frequent shape mix-ups."""
    kinds = {"colour": 0, "shape": 0, "both": 0, "stuff": 0}
    pairs: dict[str, int] = {}
    for p, t in zip(preds, labels):
        if p == t or not shapes.IS_THING[t]:
            continue
        if not shapes.IS_THING[p]:
            kinds["stuff"] += 1
            continue
        (tc, ts), (pc, ps) = (shapes.CLASS_NAMES[i].split(" ", 1) for i in (t, p))
        kinds["both" if tc != pc and ts != ps else "colour" if tc != pc else "shape"] += 1
        if ts != ps:
            pairs[f"{ts} -> {ps}"] = pairs.get(f"{ts} -> {ps}", 0) + 1
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {**kinds, "shape_mix_ups": dict(top)}
