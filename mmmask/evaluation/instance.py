"""Instance segmentation AP through pycocotools' ``COCOeval`` (``iouType="segm"``).

Ground truth comes from ``input["instances"]`` (thing segments only), detections from
``output["instances"]``; both are stored as COCO RLE. The state is the list of images with their
ground-truth and detection RLEs, so states merge exactly; images are ordered by ``image_id`` before
evaluation, which makes the result independent of the order they were processed in.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from mmmask.registry import EVALUATOR_REGISTRY

from .evaluator import check_class_lists, DatasetEvaluator, dataset_metadata, meta_get, to_numpy

__all__ = ["InstanceEvaluator", "encode_masks", "coco_instance_metrics"]

_SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def encode_masks(masks: Any) -> list[dict]:
    """COCO RLEs (``{"size": [H, W], "counts": bytes}``) of bool masks [N, H, W]."""
    from pycocotools import mask as mask_util

    arr = to_numpy(masks).astype(bool)
    if arr.ndim != 3:
        raise ValueError(f"masks must be [N, H, W]; got shape {arr.shape}.")
    if arr.shape[0] == 0:
        return []
    fortran = np.asfortranarray(arr.transpose(1, 2, 0).astype(np.uint8))  # (H, W, N)
    return list(mask_util.encode(fortran))


def _area(rle: dict) -> int:
    from pycocotools import mask as mask_util

    return int(mask_util.area(rle))


def _image_sort_key(entry: dict) -> tuple:
    iid = entry["image_id"]
    return (type(iid).__name__, iid if isinstance(iid, (int, float)) else str(iid))


def coco_instance_metrics(images: Sequence[dict], num_classes: int,
                          is_thing: Sequence[bool] | None = None,
                          class_names: Sequence[str] | None = None,
                          is_seen: Sequence[bool] | None = None) -> dict[str, Any]:
    """Mask AP (percent) of ``images``: dicts ``{"image_id", "height", "width", "gts": [{"rle",
    "category_id"}], "dets": [{"rle", "category_id", "score"}]}``, category ids contiguous in
    ``[0, num_classes)``. Only thing classes (``is_thing``; all when None) are evaluated."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    things = [i for i in range(num_classes) if is_thing is None or is_thing[i]]
    images = sorted(images, key=_image_sort_key)
    coco_images, gt_anns, dets = [], [], []
    for img_idx, img in enumerate(images, start=1):
        coco_images.append({"id": img_idx, "height": int(img["height"]),
                            "width": int(img["width"])})
        for g in img["gts"]:
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": img_idx,
                            "category_id": int(g["category_id"]) + 1,
                            "segmentation": g["rle"], "area": float(mask_util.area(g["rle"])),
                            "bbox": list(mask_util.toBbox(g["rle"])), "iscrowd": 0})
        for d in img["dets"]:
            dets.append({"image_id": img_idx, "category_id": int(d["category_id"]) + 1,
                         "segmentation": d["rle"], "score": float(d["score"])})
    nan = float("nan")
    res: dict[str, Any] = {k: nan for k in _SUMMARY_KEYS}
    res["per_class"] = {names[i]: None for i in things}
    if not gt_anns:
        return res
    gt = COCO()
    gt.dataset = {"images": coco_images, "annotations": gt_anns,
                  "categories": [{"id": i + 1, "name": names[i]} for i in things]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": coco_images, "annotations": [],
                          "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for k, v in zip(_SUMMARY_KEYS, ev.stats[:6]):
        res[k] = 100 * float(v) if v >= 0 else nan
    precision = ev.eval["precision"]  # (T iou thresholds, R recalls, K classes, A areas, M maxDets)
    per_class: dict[int, float] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_class[cat_id - 1] = 100 * float(p.mean())
    res["per_class"] = {names[i]: per_class.get(i) for i in things}
    if is_seen is not None:
        for key, flag in (("AP_seen", True), ("AP_unseen", False)):
            vals = [v for i, v in per_class.items() if bool(is_seen[i]) == flag]
            res[key] = float(np.mean(vals)) if vals else nan
    return res


class InstanceEvaluator(DatasetEvaluator):
    """COCO mask AP evaluator (AP, AP50, AP75, APs, APm, APl, per-class AP, seen/unseen AP).

    ``process`` reads ``input["instances"]`` (``masks`` bool [N, H, W], ``classes`` [N],
    ``is_thing`` [N]; stuff segments and empty masks are skipped) and ``output["instances"]``
    (``masks`` bool [M, H, W], ``scores`` [M], ``classes`` [M]); detections of stuff classes
    are dropped.
    """

    name = "instance"

    def __init__(self, num_classes: int, is_thing: Sequence[bool] | None = None,
                 class_names: Sequence[str] | None = None,
                 is_seen: Sequence[bool] | None = None):
        check_class_lists(num_classes, is_thing=is_thing, class_names=class_names, is_seen=is_seen)
        self.num_classes = int(num_classes)
        self.is_thing = [bool(t) for t in is_thing] if is_thing is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.is_seen = list(is_seen) if is_seen is not None else None
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []

    def _thing(self, c: int) -> bool:
        if not 0 <= c < self.num_classes:
            raise ValueError(f"Category id {c} is outside [0, {self.num_classes}).")
        return self.is_thing is None or self.is_thing[c]

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if inp.get("instances") is None:
                raise KeyError("InstanceEvaluator needs input['instances'] (masks, classes, "
                               "is_thing).")
            gi, di = inp["instances"], out["instances"]
            g_cls = to_numpy(gi["classes"]).astype(np.int64).reshape(-1)
            g_thing = (to_numpy(gi["is_thing"]).astype(bool).reshape(-1)
                       if gi.get("is_thing") is not None else np.ones(len(g_cls), bool))
            g_rles = encode_masks(gi["masks"])
            gts = [{"rle": r, "category_id": int(c)} for r, c, t in zip(g_rles, g_cls, g_thing)
                   if t and self._thing(int(c)) and _area(r) > 0]
            d_cls = to_numpy(di["classes"]).astype(np.int64).reshape(-1)
            d_scores = to_numpy(di["scores"]).astype(np.float64).reshape(-1)
            d_rles = encode_masks(di["masks"])
            if not len(d_rles) == len(d_cls) == len(d_scores):
                raise ValueError("output['instances'] masks, scores and classes differ in length.")
            dets = [{"rle": r, "category_id": int(c), "score": float(s)}
                    for r, c, s in zip(d_rles, d_cls, d_scores) if self._thing(int(c))]
            masks = gi["masks"]
            h, w = masks.shape[-2:]
            self._images.append({"image_id": inp.get("image_id", len(self._images)),
                                 "height": int(h), "width": int(w), "gts": gts, "dets": dets})

    def state(self) -> list[dict]:
        return [dict(img, gts=list(img["gts"]), dets=list(img["dets"])) for img in self._images]

    def merge(self, states: Sequence[Any]) -> None:
        for s in states:
            self._images.extend(s)

    def compute(self) -> dict:
        return coco_instance_metrics(self._images, self.num_classes, self.is_thing,
                                     self.class_names, self.is_seen)


def build_instance_evaluator(dataset_name: str | None, cfg: Any = None, *, metadata: Any = None,
                             **kwargs: Any) -> InstanceEvaluator:
    """An :class:`InstanceEvaluator` from a dataset's metadata (``kwargs`` override)."""
    meta = dataset_metadata(dataset_name, metadata)
    names = meta_get(meta, "class_names") or [c[0] for c in meta_get(meta, "classes")]
    args = dict(num_classes=len(names), is_thing=meta_get(meta, "is_thing"), class_names=names,
                is_seen=meta_get(meta, "is_seen"))
    args.update(kwargs)
    return InstanceEvaluator(**args)


build_instance_evaluator.__name__ = "instance"
EVALUATOR_REGISTRY.register(build_instance_evaluator)
