"""COCO panoptic and COCO instances readers, and COCO segmentation -> mask decoding.

Category ids of the files are mapped to contiguous class indices in id order (``category_id``
in the records is contiguous); the metadata keeps ``dataset_id_to_contiguous_id`` maps.
File names inside the JSON are resolved inside their root folder and may not escape it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

import numpy as np

from .image_io import resolve_in_root

__all__ = [
    "coco_categories_metadata",
    "load_coco_panoptic",
    "load_coco_instances",
    "segmentation_to_mask",
]


def coco_categories_metadata(categories: list[dict], *, panoptic: bool) -> dict[str, Any]:
    """Catalog metadata from COCO ``categories`` (sorted by id -> contiguous ids).

    A category may carry ``"synonyms"`` (list) and ``"seen"`` (bool); ``isthing`` defaults to 1
    (instances files have things only).
    """
    if not categories:
        raise ValueError("COCO file has no 'categories'")
    cats = sorted(categories, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError("COCO 'categories' repeat an id")
    classes, is_thing = [], []
    for c in cats:
        syns = [str(c["name"])] + [str(s) for s in c.get("synonyms", []) if s != c["name"]]
        classes.append(syns)
        is_thing.append(bool(c.get("isthing", 1)))
    id_map = {cid: i for i, cid in enumerate(ids)}
    seen = [c.get("seen") for c in cats]
    meta: dict[str, Any] = {
        "classes": classes,
        "is_thing": is_thing,
        "is_seen": None if any(s is None for s in seen) else [bool(s) for s in seen],
        "evaluator_type": "panoptic" if panoptic else "instance",
        "dataset_id_to_contiguous_id": id_map,
        "thing_dataset_id_to_contiguous_id": {
            cid: i for cid, i in id_map.items() if is_thing[i]},
    }
    if panoptic:
        meta["stuff_dataset_id_to_contiguous_id"] = {
            cid: i for cid, i in id_map.items() if not is_thing[i]}
    return meta


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _valid_categories(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(c, dict) and "id" in c and "name" in c for c in value)


def read_coco_categories(path: str) -> list[dict]:
    """The top-level ``categories`` list of a COCO JSON file without parsing the rest.

    Registering a dataset root needs only the categories, and COCO's train annotation files are
    hundreds of MB: the key is searched for in the raw bytes (last occurrence first, where COCO's
    own files keep it) and only the list after it is decoded. Anything unusual (no such key, a
    look-alike inside a string, not a list of ``{"id", "name"}`` objects) falls back to parsing
    the whole file.
    """
    import mmap

    key = b'"categories"'
    decoder = json.JSONDecoder()
    try:
        with open(path, "rb") as f, contextlib.suppress(ValueError):  # empty file: no mmap
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                pos, tries = len(buf), 0
                while tries < 8 and (pos := buf.rfind(key, 0, pos)) != -1:
                    start = pos + len(key)
                    while buf[start:start + 1] in (b" ", b"\t", b"\n", b"\r"):
                        start += 1
                    if buf[start:start + 1] != b":" or buf[pos - 1:pos] == b"\\":
                        continue  # inside a string, not a key
                    tries += 1
                    start += 1
                    size = 1 << 16
                    while True:  # decode a growing window until it holds the whole value
                        chunk = buf[start:start + size]
                        try:
                            text = chunk.decode("utf-8", errors="replace").lstrip()
                            value, _ = decoder.raw_decode(text)
                        except json.JSONDecodeError:
                            if start + size >= len(buf):
                                break
                            size *= 4
                            continue
                        if _valid_categories(value):
                            return value
                        break
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
    data = _load_json(path)
    cats = data.get("categories", []) if isinstance(data, dict) else []
    return cats if _valid_categories(cats) else []


def load_coco_panoptic(json_file: str, png_root: str, image_root: str
                       ) -> tuple[list[dict], dict[str, Any]]:
    """Records and metadata of a COCO panoptic split.

    Record: ``{"image_id", "file_name", "height", "width", "pan_seg_file_name",
    "segments_info": [{"id", "category_id" (contiguous), "isthing", "iscrowd", "area",
    "bbox"}]}``. Segment ids in the PNG are ``R + 256 * G + 256**2 * B``.
    """
    data = _load_json(json_file)
    meta = coco_categories_metadata(data.get("categories", []), panoptic=True)
    id_map, is_thing = meta["dataset_id_to_contiguous_id"], meta["is_thing"]
    anns = {a["image_id"]: a for a in data.get("annotations", [])}
    missing = [str(img["file_name"]) for img in data.get("images", []) if img["id"] not in anns]
    if missing:
        raise ValueError(
            f"{json_file}: {len(missing)} image(s) have no panoptic annotation: "
            f"{', '.join(missing[:10])}"
        )
    records = []
    for img in data.get("images", []):
        ann = anns[img["id"]]
        segs = []
        for s in ann.get("segments_info", []):
            if int(s["category_id"]) not in id_map:
                raise ValueError(
                    f"{json_file}: segment {s.get('id')} of image {img['id']} has unknown "
                    f"category_id {s['category_id']}"
                )
            cls = id_map[int(s["category_id"])]
            segs.append({
                "id": int(s["id"]), "category_id": cls, "isthing": is_thing[cls],
                "iscrowd": int(s.get("iscrowd", 0)), "area": s.get("area"),
                "bbox": s.get("bbox"),
            })
        records.append({
            "image_id": img["id"],
            "file_name": resolve_in_root(image_root, img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "pan_seg_file_name": resolve_in_root(png_root, ann["file_name"]),
            "segments_info": segs,
        })
    meta.update(json_file=json_file, panoptic_root=png_root, image_root=image_root)
    return records, meta


def load_coco_instances(json_file: str, image_root: str) -> tuple[list[dict], dict[str, Any]]:
    """Records and metadata of a COCO instances file (read with pycocotools).

    Record: ``{"image_id", "file_name", "height", "width", "annotations": [{"id",
    "category_id" (contiguous), "segmentation" (polygons or RLE), "bbox", "area",
    "iscrowd"}]}``. Annotations without a segmentation are left out.
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file not found: {json_file}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco = COCO(json_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{json_file}: not valid JSON ({e})") from None
    meta = coco_categories_metadata(coco.loadCats(coco.getCatIds()), panoptic=False)
    id_map = meta["dataset_id_to_contiguous_id"]
    records = []
    for img_id in sorted(coco.getImgIds()):
        img = coco.imgs[img_id]
        anns = []
        for a in coco.imgToAnns.get(img_id, []):
            if not a.get("segmentation"):
                continue
            if int(a["category_id"]) not in id_map:
                raise ValueError(
                    f"{json_file}: annotation {a.get('id')} has unknown category_id "
                    f"{a['category_id']}"
                )
            anns.append({
                "id": a.get("id"), "category_id": id_map[int(a["category_id"])],
                "segmentation": a["segmentation"], "bbox": a.get("bbox"),
                "area": a.get("area"), "iscrowd": int(a.get("iscrowd", 0)),
            })
        records.append({
            "image_id": img_id,
            "file_name": resolve_in_root(image_root, img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "annotations": anns,
        })
    meta.update(json_file=json_file, image_root=image_root)
    return records, meta


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> HxW bool."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, *segm["size"])
    elif isinstance(segm, dict) and "counts" in segm:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"Unknown COCO segmentation format: {type(segm).__name__}")
    mask = mask_utils.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(
            f"Segmentation of size {mask.shape[1]} x {mask.shape[0]} does not match the image "
            f"{width} x {height}"
        )
    return mask
