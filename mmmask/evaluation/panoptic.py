"""Panoptic quality (PQ = SQ x RQ), computed as in the COCO panopticapi definition.

A predicted and a ground-truth segment of the same class match when their IoU exceeds 0.5, where
the union leaves out the predicted segment's pixels that are void in the ground truth. Unmatched
ground-truth segments are false negatives; unmatched predictions are false positives unless more
than half of their area is void in the ground truth. Per class: ``PQ = sum(IoU) / (TP + FP/2 +
FN/2)``, ``SQ = sum(IoU) / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``; averages run over classes
with at least one TP, FP or FN. Crowd flags are ignored (crowd regions are ordinary segments).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mmmask.registry import EVALUATOR_REGISTRY

from .evaluator import check_class_lists, DatasetEvaluator, dataset_metadata, meta_get, to_numpy

__all__ = ["PanopticEvaluator", "pq_stats", "panoptic_metrics", "panoptic_ground_truth"]


def _rgb2id(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_ground_truth(inp: dict, ignore_label: int = 255) -> tuple[np.ndarray, dict[int, int]]:
    """Ground-truth segment ids [H, W] (0 = void) and ``{segment id: category id}`` of one image.

    From ``input["instances"]`` (``masks`` bool [N, H, W], ``classes`` [N]; segment ``i`` gets
    id ``i + 1``) with ``input["sem_seg"] == ignore_label`` pixels made void, or from
    ``input["pan_seg_file_name"]`` (COCO panoptic PNG) and ``input["segments_info"]``.
    Pixels covered by no segment are void.
    """
    if inp.get("instances") is not None:
        inst = inp["instances"]
        masks = to_numpy(inst["masks"]).astype(bool)  # (N, H, W)
        classes = to_numpy(inst["classes"]).astype(np.int64).reshape(-1)
        if masks.ndim != 3 or masks.shape[0] != classes.shape[0]:
            raise ValueError(f"instances: masks {masks.shape} and classes {classes.shape} differ.")
        ids = np.zeros(masks.shape[1:], np.int64)
        for i in range(masks.shape[0]):
            ids[masks[i]] = i + 1
        if inp.get("sem_seg") is not None:
            sem = to_numpy(inp["sem_seg"])
            if sem.shape != ids.shape:
                raise ValueError(f"sem_seg {sem.shape} and instance masks {ids.shape} differ.")
            ids[sem == ignore_label] = 0
        return ids, {i + 1: int(c) for i, c in enumerate(classes)}
    if inp.get("pan_seg_file_name") and inp.get("segments_info") is not None:
        from PIL import Image

        with Image.open(inp["pan_seg_file_name"]) as im:
            ids = _rgb2id(np.asarray(im.convert("RGB")))
        cats = {int(s["id"]): int(s["category_id"]) for s in inp["segments_info"]}
        return ids, cats
    raise KeyError("The input has no panoptic ground truth; valid keys: 'instances' (+ 'sem_seg' "
                   "for ignore pixels) or 'pan_seg_file_name' + 'segments_info'.")


def pq_stats(gt_ids: np.ndarray, gt_cats: dict[int, int], pred_ids: np.ndarray,
             pred_cats: dict[int, int], num_classes: int) -> dict[str, Any]:
    """Matching statistics of one image.

    Args:
        gt_ids: int [H, W] ground-truth segment ids; ids absent from ``gt_cats`` (0 included)
            are void.
        gt_cats / pred_cats: segment id -> class id in ``[0, num_classes)``.
        pred_ids: int [H, W] predicted segment ids; ids absent from ``pred_cats`` are unlabeled.

    Returns:
        ``{"tp", "fp", "fn": int64 [C], "ious": list of C lists of matched IoUs}``.
    """
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    pred_ids = np.asarray(pred_ids, dtype=np.int64)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"Ground truth {gt_ids.shape} and prediction {pred_ids.shape} differ in "
                         "size.")
    for name, cats in (("ground-truth", gt_cats), ("predicted", pred_cats)):
        bad = [c for c in cats.values() if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"{name} category ids {bad} are outside [0, {num_classes}).")
    gt = np.where(np.isin(gt_ids, list(gt_cats)), gt_ids, 0)
    pred = np.where(np.isin(pred_ids, list(pred_cats)), pred_ids, 0)
    gt_area = dict(zip(*np.unique(gt, return_counts=True)))
    pred_area = dict(zip(*np.unique(pred, return_counts=True)))
    base = int(pred.max()) + 1
    pairs, counts = np.unique(gt * base + pred, return_counts=True)
    inter = {(int(k // base), int(k % base)): int(n) for k, n in zip(pairs, counts)}

    tp = np.zeros(num_classes, np.int64)
    fp = np.zeros(num_classes, np.int64)
    fn = np.zeros(num_classes, np.int64)
    ious: list[list[float]] = [[] for _ in range(num_classes)]
    matched_gt, matched_pred = set(), set()
    for (g, p), n in inter.items():
        if g == 0 or p == 0 or gt_cats[g] != pred_cats[p]:
            continue
        union = pred_area[p] + gt_area[g] - n - inter.get((0, p), 0)
        iou = n / union
        if iou > 0.5:
            c = gt_cats[g]
            tp[c] += 1
            ious[c].append(iou)
            matched_gt.add(g)
            matched_pred.add(p)
    for g, c in gt_cats.items():
        if g in gt_area and g != 0 and g not in matched_gt:
            fn[c] += 1
    for p, c in pred_cats.items():
        if p not in pred_area or p == 0 or p in matched_pred:
            continue
        if inter.get((0, p), 0) / pred_area[p] > 0.5:  # mostly void in the ground truth
            continue
        fp[c] += 1
    return {"tp": tp, "fp": fp, "fn": fn, "ious": ious}


def panoptic_metrics(stats: dict[str, Any], is_thing: Sequence[bool],
                     class_names: Sequence[str] | None = None,
                     is_seen: Sequence[bool] | None = None) -> dict[str, Any]:
    """PQ, SQ, RQ (percent) overall, over things (``_th``) and stuff (``_st``), per class and,
    with ``is_seen``, ``PQ_seen`` / ``PQ_unseen``, from accumulated :func:`pq_stats`."""
    tp, fp, fn = (np.asarray(stats[k], dtype=np.float64) for k in ("tp", "fp", "fn"))
    c = tp.shape[0]
    iou_sum = np.array([math.fsum(v) for v in stats["ious"]], dtype=np.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    thing = np.asarray(is_thing, dtype=bool)
    if thing.shape != (c,) or len(names) != c:
        raise ValueError(
            f"is_thing ({thing.shape}) and class_names ({len(names)}) need {c} entries.")
    denom = tp + 0.5 * fp + 0.5 * fn
    valid = denom > 0
    pq = np.divide(iou_sum, denom, out=np.zeros(c), where=valid)
    sq = np.divide(iou_sum, tp, out=np.zeros(c), where=tp > 0)
    rq = np.divide(tp, denom, out=np.zeros(c), where=valid)

    def avg(values: np.ndarray, sel: np.ndarray) -> float:
        sel = sel & valid
        return 100 * float(values[sel].mean()) if sel.any() else float("nan")

    res: dict[str, Any] = {}
    for suffix, sel in (("", np.ones(c, bool)), ("_th", thing), ("_st", ~thing)):
        res["PQ" + suffix] = avg(pq, sel)
        res["SQ" + suffix] = avg(sq, sel)
        res["RQ" + suffix] = avg(rq, sel)
    if is_seen is not None:
        seen = np.asarray(is_seen, dtype=bool)
        if seen.shape != (c,):
            raise ValueError(f"is_seen needs one flag per class ({c}); got {seen.shape}.")
        res["PQ_seen"] = avg(pq, seen)
        res["PQ_unseen"] = avg(pq, ~seen)
    res["per_class"] = {
        n: ({"PQ": 100 * float(pq[i]), "SQ": 100 * float(sq[i]), "RQ": 100 * float(rq[i])}
            if valid[i] else None)
        for i, n in enumerate(names)
    }
    return res


class PanopticEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ evaluator.

    ``process`` reads the ground truth with :func:`panoptic_ground_truth` and
    ``output["panoptic_seg"] = (ids [H, W], [{"id", "category_id", ...}])`` (ids <= 0 = void).
    State: per-class ``tp``, ``fp``, ``fn`` counts and the matched IoUs of each class (summed
    with ``math.fsum``, so merged states give exactly the metrics of one evaluator).
    """

    name = "panoptic"

    def __init__(self, num_classes: int, is_thing: Sequence[bool], ignore_label: int = 255,
                 class_names: Sequence[str] | None = None,
                 is_seen: Sequence[bool] | None = None):
        check_class_lists(num_classes, is_thing=is_thing, class_names=class_names, is_seen=is_seen)
        self.num_classes = int(num_classes)
        self.is_thing = [bool(t) for t in is_thing]
        self.ignore_label = int(ignore_label)
        self.class_names = list(class_names) if class_names is not None else None
        self.is_seen = list(is_seen) if is_seen is not None else None
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self._stats: dict[str, Any] = {
            "tp": np.zeros(c, np.int64), "fp": np.zeros(c, np.int64),
            "fn": np.zeros(c, np.int64), "ious": [[] for _ in range(c)],
        }

    def _add(self, stats: dict[str, Any]) -> None:
        for k in ("tp", "fp", "fn"):
            arr = np.asarray(stats[k], dtype=np.int64)
            if arr.shape != (self.num_classes,):
                raise ValueError(
                    f"State {k!r} of shape {arr.shape}; expected ({self.num_classes},).")
            self._stats[k] += arr
        for mine, other in zip(self._stats["ious"], stats["ious"]):
            mine.extend(float(v) for v in other)

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred_ids, segments = out["panoptic_seg"]
            pred_ids = to_numpy(pred_ids).astype(np.int64)
            gt_ids, gt_cats = panoptic_ground_truth(inp, self.ignore_label)
            if gt_ids.shape != pred_ids.shape and inp.get("pan_seg_file_name"):
                gt_ids, gt_cats = panoptic_ground_truth(
                    {k: v for k, v in inp.items() if k != "instances"}, self.ignore_label)
            pred_cats = {int(s["id"]): int(s["category_id"]) for s in segments if int(s["id"]) > 0}
            self._add(pq_stats(gt_ids, gt_cats, pred_ids, pred_cats, self.num_classes))

    def state(self) -> dict[str, Any]:
        return {"tp": self._stats["tp"].copy(), "fp": self._stats["fp"].copy(),
                "fn": self._stats["fn"].copy(), "ious": [list(v) for v in self._stats["ious"]]}

    def merge(self, states: Sequence[Any]) -> None:
        for s in states:
            self._add(s)

    def compute(self) -> dict:
        return panoptic_metrics(self._stats, self.is_thing, self.class_names, self.is_seen)


def build_panoptic_evaluator(dataset_name: str | None, cfg: Any = None, *, metadata: Any = None,
                             **kwargs: Any) -> PanopticEvaluator:
    """A :class:`PanopticEvaluator` from a dataset's metadata (``kwargs`` override)."""
    meta = dataset_metadata(dataset_name, metadata)
    names = meta_get(meta, "class_names") or [c[0] for c in meta_get(meta, "classes")]
    args = dict(num_classes=len(names), is_thing=meta_get(meta, "is_thing"),
                ignore_label=meta_get(meta, "ignore_label", 255), class_names=names,
                is_seen=meta_get(meta, "is_seen"))
    args.update(kwargs)
    if args["is_thing"] is None:
        raise ValueError("Panoptic evaluation needs the dataset's is_thing flags.")
    return PanopticEvaluator(**args)


build_panoptic_evaluator.__name__ = "panoptic"
EVALUATOR_REGISTRY.register(build_panoptic_evaluator)
