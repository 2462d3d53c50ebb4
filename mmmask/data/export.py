"""Write Shapes-OV to disk in the user layout and in COCO panoptic / instances format.

The files read back with :mod:`mmmask.data.readers` and :mod:`mmmask.data.coco`::

    OUT/classes.json                       {"classes": synonyms, "thing", "stuff", "unseen"}
    OUT/images/<split>/<id>.png
    OUT/annotations/<split>/<id>.png       label ids, 255 = ignore   (format "user")
    OUT/annotations/panoptic_<split>.json + panoptic_<split>/<id>.png  (format "coco")
    OUT/annotations/instances_<split>.json (RLE masks)                (format "coco")

COCO category ids are the class index + 1. The train split labels only seen classes.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
from PIL import Image

from . import shapes

__all__ = ["FORMATS", "write_shapes_dataset"]

FORMATS = ("user", "coco")
_PNG = {"compress_level": 1}  # fast writing; files stay lossless


def _classes_json() -> dict:
    names = shapes.CLASS_NAMES
    return {
        "classes": [list(s) for s in shapes.CLASS_SYNONYMS],
        "thing": [n for n, t in zip(names, shapes.IS_THING) if t],
        "stuff": [n for n, t in zip(names, shapes.IS_THING) if not t],
        "unseen": [n for n, s in zip(names, shapes.IS_SEEN) if not s],
    }


def _categories() -> list[dict]:
    return [
        {"id": i + 1, "name": n, "isthing": int(t), "supercategory": "thing" if t else "stuff",
         "synonyms": list(syn[1:]), "seen": bool(seen)}
        for i, (n, t, syn, seen) in enumerate(zip(shapes.CLASS_NAMES, shapes.IS_THING,
                                                   shapes.CLASS_SYNONYMS, shapes.IS_SEEN))
    ]


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _segments(sample: shapes.ShapesSample) -> list[tuple[np.ndarray, int, bool]]:
    """Panoptic segments: each labelled thing instance, then each labelled stuff region."""
    segs = [(d["mask"], int(d["category_id"]), True) for d in sample.instances if d["mask"].any()]
    for sid in sorted(sample.stuff_ids):
        m = sample.sem_seg == sid  # unseen stuff is 255 in the train split: then empty
        if m.any():
            segs.append((m, int(sid), False))
    return segs


def _write_one(job: tuple) -> tuple[dict, dict, list[dict]]:
    """Render and write image ``i``; returns its COCO image entry, panoptic annotation and
    instance annotations (ids filled in by the caller)."""
    from pycocotools import mask as mask_utils

    out, split, i, size, seed, formats, width = job
    s = shapes.render_sample(seed, split, i, size)
    stem = f"{i:0{width}d}"
    Image.fromarray(s.image).save(os.path.join(out, "images", split, stem + ".png"), **_PNG)
    if "user" in formats:
        Image.fromarray(s.sem_seg.astype(np.uint8)).save(
            os.path.join(out, "annotations", split, stem + ".png"), **_PNG)
    image = {"id": i, "file_name": stem + ".png", "height": size, "width": size}
    if "coco" not in formats:
        return image, {}, []
    ids = np.zeros((size, size), np.int32)
    infos, inst = [], []
    for k, (m, cls, thing) in enumerate(_segments(s)):
        ids[m] = k + 1
        bbox, area = _bbox(m), int(m.sum())
        infos.append({"id": k + 1, "category_id": cls + 1, "iscrowd": 0, "bbox": bbox,
                      "area": area})
        if thing:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            inst.append({"image_id": i, "category_id": cls + 1, "segmentation": rle,
                         "bbox": bbox, "area": area, "iscrowd": 0})
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    pan_file = os.path.join(out, "annotations", f"panoptic_{split}", stem + ".png")
    Image.fromarray(rgb).save(pan_file, **_PNG)
    return image, {"image_id": i, "file_name": stem + ".png", "segments_info": infos}, inst


def _write_split(out: str, split: str, n: int, size: int, seed: int, formats: set[str],
                 workers: int) -> None:
    os.makedirs(os.path.join(out, "images", split), exist_ok=True)
    if "user" in formats:
        os.makedirs(os.path.join(out, "annotations", split), exist_ok=True)
    if "coco" in formats:
        os.makedirs(os.path.join(out, "annotations", f"panoptic_{split}"), exist_ok=True)
    width = max(6, len(str(max(n - 1, 0))))
    jobs = [(out, split, i, size, seed, formats, width) for i in range(n)]
    if workers > 1 and n >= 4 * workers:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_write_one, jobs, chunksize=max(1, n // (8 * workers)))
    else:
        results = [_write_one(j) for j in jobs]
    if "coco" not in formats:
        return
    images = [r[0] for r in results]
    pan_anns = [r[1] for r in results]
    inst_anns = [a for r in results for a in r[2]]
    for k, a in enumerate(inst_anns):
        a["id"] = k + 1
    cats = _categories()
    ann_dir = os.path.join(out, "annotations")
    with open(os.path.join(ann_dir, f"panoptic_{split}.json"), "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": cats}, f)
    things = [c for c in cats if c["isthing"]]
    with open(os.path.join(ann_dir, f"instances_{split}.json"), "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": inst_anns, "categories": things}, f)


def write_shapes_dataset(out: str, splits: dict[str, int], *, size: int = 256, seed: int = 0,
                         formats: Iterable[str] = FORMATS,
                         workers: int | None = None) -> dict[str, int]:
    """Render ``splits`` (``{"train": N, "val": N, "test": N}``) of Shapes-OV into ``out``.

    Args:
        out: output folder (created).
        splits: number of images per split; the split names are Shapes-OV's.
        size: image side in pixels.
        seed: Shapes-OV seed (same seed, same images).
        formats: any of ``"user"`` (classes.json + label PNGs) and ``"coco"`` (panoptic +
            instances JSON). Images are written once and shared.
        workers: processes rendering in parallel (default: the CPU count, at most 8); the
            output does not depend on it.

    Returns the number of images written per split.
    """
    fmt = {f.strip() for f in formats if f.strip()}
    unknown = fmt - set(FORMATS)
    if unknown or not fmt:
        raise ValueError(f"Unknown format(s) {sorted(unknown)}; valid: {', '.join(FORMATS)}")
    for split, n in splits.items():
        if split not in ("train", "val", "test"):
            raise ValueError(f"Unknown Shapes-OV split {split!r}; valid: train, val, test")
        if n < 0:
            raise ValueError(f"Split {split!r} size must be >= 0, got {n}")
    if size < 16:
        raise ValueError(f"Image size must be >= 16 pixels, got {size}")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    os.makedirs(out, exist_ok=True)
    if "user" in fmt:
        with open(os.path.join(out, "classes.json"), "w", encoding="utf-8") as f:
            json.dump(_classes_json(), f, indent=1)
    for split, n in splits.items():
        if n > 0:
            _write_split(out, split, int(n), int(size), int(seed), fmt, workers)
    return {k: int(v) for k, v in splits.items()}
