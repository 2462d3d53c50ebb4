"""Zero-shot classification of Shapes-OV object crops: how well a CLIP names every class.

Reports accuracy over the 64 thing classes (seen and unseen separately) and how often the colour
and the shape alone are right, the two halves a compositional class name needs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmmask.data import shapes
from mmmask.data.vocab import Vocabulary

__all__ = ["shapes_zero_shot"]


@torch.no_grad()
def shapes_zero_shot(backbone, num_images: int = 1000, seed: int = 12345, size: int = 64,
                     batch_size: int = 250) -> dict:
    """Accuracy (percent) of ``backbone`` (a ``CLIPBackbone``) on held-out object crops."""
    from mmmask.modeling.clip.text import synonym_index

    names = shapes.CLASS_SYNONYMS[: shapes.NUM_THINGS]
    vocab = Vocabulary.from_names(names)
    text = backbone.encode_vocabulary(vocab)  # (S, D)
    syn = synonym_index(vocab)
    preds, labels = [], []
    for start in range(0, num_images, batch_size):
        crops = [shapes.render_object_crop(seed, 10**7 + i, size)
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
    }
