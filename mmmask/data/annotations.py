"""Turn one catalog record into arrays: the image, a semantic map and panoptic segments.

Pure functions of the record (and files it names). Segments follow the model-input contract:
each thing instance and one segment per stuff class region; a plain semantic record (label PNG
only) gives one segment per class present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .image_io import DEFAULT_MAX_PIXELS, read_image, read_label_png, read_panoptic_png

__all__ = ["AnnotatedImage", "load_record", "segments_from_semantic"]

IGNORE = 255


@dataclass
class AnnotatedImage:
    """Arrays of one record.

    image: HxWx3 uint8 RGB. sem_seg: HxW int32 class ids (255 = ignore) or None. masks: NxHxW
    bool segments or None (no instance annotation); classes: N int64; is_thing: N bool.
    """

    image: np.ndarray
    sem_seg: np.ndarray | None = None
    masks: np.ndarray | None = None
    classes: np.ndarray | None = None
    is_thing: np.ndarray | None = None


def _stack(masks: list[np.ndarray], h: int, w: int) -> np.ndarray:
    return np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), bool)


def segments_from_semantic(sem: np.ndarray, is_thing: Sequence[bool] | None = None):
    """One segment per class present in ``sem`` (HxW, 255 ignored), in class order.

    Returns ``(masks NxHxW bool, classes N int64, is_thing N bool)``; ``is_thing`` of a class
    comes from the given per-class flags (False when not given).
    """
    present = [int(c) for c in np.unique(sem) if c != IGNORE]
    h, w = sem.shape
    masks = _stack([sem == c for c in present], h, w)
    flags = [bool(is_thing[c]) if is_thing is not None and c < len(is_thing) else False
             for c in present]
    return masks, np.asarray(present, np.int64), np.asarray(flags, bool)


def _shapes(spec: dict) -> AnnotatedImage:
    from .shapes import NUM_THINGS, render_sample

    s = render_sample(int(spec["seed"]), str(spec["split"]), int(spec["index"]),
                      int(spec["size"]))
    sem = s.sem_seg.astype(np.int32)
    h, w = sem.shape
    masks = [d["mask"] for d in s.instances if d["mask"].any()]
    classes = [int(d["category_id"]) for d in s.instances if d["mask"].any()]
    flags = [True] * len(masks)
    for sid in sorted(int(c) for c in np.unique(sem) if NUM_THINGS <= c != IGNORE):
        masks.append(sem == sid)
        classes.append(sid)
        flags.append(False)
    return AnnotatedImage(s.image, sem, _stack(masks, h, w), np.asarray(classes, np.int64),
                          np.asarray(flags, bool))


def _check_shape(arr: np.ndarray, image: np.ndarray, what: str, record: dict) -> None:
    if arr.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"{what} is {arr.shape[1]} x {arr.shape[0]} but its image "
            f"{record.get('file_name', record.get('image_id'))} is {image.shape[1]} x "
            f"{image.shape[0]}; annotations must have the image's size"
        )


def _semantic(record: dict, image: np.ndarray, ignore_label: int,
              num_classes: int | None) -> np.ndarray:
    sem = read_label_png(record["sem_seg_file_name"]).astype(np.int32)
    _check_shape(sem, image, f"Label map {record['sem_seg_file_name']}", record)
    if ignore_label != IGNORE:
        sem = np.where(sem == ignore_label, IGNORE, np.where(sem == IGNORE, -1, sem))
    bad = sem[(sem != IGNORE) & ((sem < 0) | (num_classes is not None and sem >= num_classes))]
    if bad.size:
        raise ValueError(
            f"{record['sem_seg_file_name']}: label id {int(bad.flat[0])} is not a class id "
            f"(0..{(num_classes or 0) - 1}) nor the ignore label {ignore_label}"
        )
    return sem


def _panoptic(record: dict, image: np.ndarray):
    ids = read_panoptic_png(record["pan_seg_file_name"])
    _check_shape(ids, image, f"Panoptic PNG {record['pan_seg_file_name']}", record)
    h, w = ids.shape
    sem = np.full((h, w), IGNORE, np.int32)
    masks, classes, flags = [], [], []
    for seg in record.get("segments_info", []):
        m = ids == int(seg["id"])
        if seg.get("iscrowd", 0):
            continue  # crowd regions stay ignore
        sem[m] = int(seg["category_id"])
        if m.any():
            masks.append(m)
            classes.append(int(seg["category_id"]))
            flags.append(bool(seg.get("isthing", True)))
    return sem, _stack(masks, h, w), np.asarray(classes, np.int64), np.asarray(flags, bool)


def _instances(record: dict, image: np.ndarray):
    from .coco import segmentation_to_mask

    h, w = image.shape[:2]
    masks, classes = [], []
    for ann in record.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        m = segmentation_to_mask(ann["segmentation"], h, w)
        if m.any():
            masks.append(m)
            classes.append(int(ann["category_id"]))
    return _stack(masks, h, w), np.asarray(classes, np.int64), np.ones(len(masks), bool)


def load_record(record: dict, *, is_thing: Sequence[bool] | None = None,
                ignore_label: int = IGNORE, max_pixels: int | None = DEFAULT_MAX_PIXELS
                ) -> AnnotatedImage:
    """Image and annotations of a catalog record (``shapes``, semantic PNG, COCO panoptic or
    COCO instances; a record with only ``file_name`` gives the image alone).

    ``is_thing`` (per class) marks the segments of semantic-only records and bounds their ids;
    the semantic map's ``ignore_label`` is mapped to 255.
    """
    if "shapes" in record:
        return _shapes(record["shapes"])
    if "file_name" not in record:
        raise KeyError(
            f"Record {record.get('image_id')!r} has neither 'shapes' nor 'file_name'; "
            f"keys: {sorted(record)}"
        )
    image = read_image(record["file_name"], max_pixels)
    out = AnnotatedImage(image)
    num_classes = len(is_thing) if is_thing is not None else None
    if "pan_seg_file_name" in record:
        out.sem_seg, out.masks, out.classes, out.is_thing = _panoptic(record, image)
    elif "annotations" in record:
        out.masks, out.classes, out.is_thing = _instances(record, image)
    if "sem_seg_file_name" in record:
        out.sem_seg = _semantic(record, image, ignore_label, num_classes)
        if out.masks is None:
            out.masks, out.classes, out.is_thing = segments_from_semantic(out.sem_seg, is_thing)
    return out
