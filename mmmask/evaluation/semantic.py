"""Semantic segmentation metrics: mIoU, fwIoU, mACC, pACC from a confusion matrix.

The confusion matrix ``conf`` has shape ``[C, C+1]`` (int64): ``conf[g, p]`` counts the pixels of
ground-truth class ``g`` predicted as ``p``; column ``C`` collects predictions outside ``[0, C)``
(e.g. the void / no-object index ``C``), which are always wrong. Ignored ground-truth pixels are not
counted at all.

Two conventions of the class mean (both reported; PC-459 results differ between papers by this):

- *present*: IoU averaged over classes with a non-empty union (in the ground truth or predicted),
  accuracy over classes present in the ground truth;
- *all*: averaged over all ``C`` classes, a class absent from both counting as 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmmask.registry import EVALUATOR_REGISTRY

from .evaluator import check_class_lists, DatasetEvaluator, dataset_metadata, meta_get, to_numpy

__all__ = ["SemSegEvaluator", "semantic_metrics", "confusion_matrix", "harmonic_mean",
           "top_confusions"]


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_label: int = 255) -> np.ndarray:
    """Confusion matrix ``[C, C+1]`` (int64) of one label map pair.

    Args:
        gt: int array [H, W] of ground-truth ids; ``ignore_label`` and ids outside ``[0, C)``
            are not counted.
        pred: int array [H, W] of predicted ids; ids outside ``[0, C)`` go to column ``C``.
    """
    gt = np.asarray(gt).astype(np.int64).reshape(-1)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f"Ground truth and prediction differ in size: {gt.shape} vs {pred.shape}.")
    c = int(num_classes)
    valid = (gt != ignore_label) & (gt >= 0) & (gt < c)
    gt, pred = gt[valid], pred[valid]
    pred = np.where((pred >= 0) & (pred < c), pred, c)
    counts = np.bincount(gt * (c + 1) + pred, minlength=c * (c + 1))
    return counts.reshape(c, c + 1).astype(np.int64)  # (C, C+1)


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; 0 when both are 0, NaN when either is NaN."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else float(2 * a * b / (a + b))


def _mean(values: np.ndarray, valid: np.ndarray, present_only: bool) -> float:
    """Mean over ``valid`` entries (present) or over all entries with invalid ones as 0 (all)."""
    if present_only:
        return float(values[valid].mean()) if valid.any() else float("nan")
    if values.size == 0:
        return float("nan")
    return float(np.where(valid, values, 0.0).mean())


def semantic_metrics(
    conf: np.ndarray,
    class_names: Sequence[str] | None = None,
    is_seen: Sequence[bool] | None = None,
    present_only: bool = True,
    is_thing: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Metrics (in percent) of a confusion matrix ``[C, C]`` or ``[C, C+1]`` (rows = ground truth).

    Returns:
        ``mIoU`` and ``mACC`` (by ``present_only``), ``mIoU_present``, ``mIoU_all``,
        ``mACC_present``, ``mACC_all``, ``fwIoU``, ``pACC``, ``per_class``
        (``{name: {"IoU", "ACC"}}``, None where undefined) and, with ``is_seen``, ``mIoU_seen``,
        ``mIoU_unseen``, ``hIoU`` (harmonic mean of the two) under the chosen convention; with
        ``is_thing`` also ``mIoU_things`` and ``mIoU_stuff`` (and, with ``is_seen`` too,
        ``mIoU_things_seen``, ``mIoU_things_unseen``, ``mIoU_stuff_seen``, ``mIoU_stuff_unseen``),
        and ``confusions``, the pixels most often taken for another class
        (:func:`top_confusions`).
    """
    conf = np.asarray(conf, dtype=np.float64)
    c = conf.shape[0]
    if conf.ndim != 2 or conf.shape[1] not in (c, c + 1):
        raise ValueError(f"conf must have shape [C, C] or [C, C+1]; got {conf.shape}.")
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a confusion matrix of {c} classes.")
    tp = np.diag(conf[:, :c])
    gt = conf.sum(1)  # pixels of each ground-truth class, wrong void predictions included
    pred = conf[:, :c].sum(0)
    union = gt + pred - tp
    iou_valid, acc_valid = union > 0, gt > 0
    iou = np.divide(tp, union, out=np.zeros(c), where=iou_valid)
    acc = np.divide(tp, gt, out=np.zeros(c), where=acc_valid)
    total = gt.sum()
    res: dict[str, Any] = {}
    res["mIoU_present"] = 100 * _mean(iou, iou_valid, True)
    res["mIoU_all"] = 100 * _mean(iou, iou_valid, False)
    res["mACC_present"] = 100 * _mean(acc, acc_valid, True)
    res["mACC_all"] = 100 * _mean(acc, acc_valid, False)
    key = "present" if present_only else "all"
    res["mIoU"] = res[f"mIoU_{key}"]
    res["mACC"] = res[f"mACC_{key}"]
    res["fwIoU"] = 100 * float((gt / total * iou).sum()) if total > 0 else float("nan")
    res["pACC"] = 100 * float(tp.sum() / total) if total > 0 else float("nan")
    if is_seen is not None:
        seen = np.asarray(is_seen, dtype=bool)
        if seen.shape != (c,):
            raise ValueError(f"is_seen needs one flag per class ({c}); got {seen.shape}.")
        res["mIoU_seen"] = 100 * _mean(iou[seen], iou_valid[seen], present_only)
        res["mIoU_unseen"] = 100 * _mean(iou[~seen], iou_valid[~seen], present_only)
        res["hIoU"] = harmonic_mean(res["mIoU_seen"], res["mIoU_unseen"])
    if is_thing is not None:
        thing = np.asarray(is_thing, dtype=bool)
        if thing.shape != (c,):
            raise ValueError(f"is_thing needs one flag per class ({c}); got {thing.shape}.")
        groups = {"things": thing, "stuff": ~thing}
        if is_seen is not None:
            groups.update({f"{g}_{s}": sel & (seen if s == "seen" else ~seen)
                           for g, sel in list(groups.items()) for s in ("seen", "unseen")})
        for g, sel in groups.items():
            res[f"mIoU_{g}"] = 100 * _mean(iou[sel], iou_valid[sel], present_only)
    first = ["mIoU", "fwIoU", "mACC", "pACC"]
    res = {**{k: res[k] for k in first}, **{k: v for k, v in res.items() if k not in first}}
    res["per_class"] = {
        n: {"IoU": 100 * float(iou[i]) if iou_valid[i] else None,
            "ACC": 100 * float(acc[i]) if acc_valid[i] else None}
        for i, n in enumerate(names)
    }
    res["confusions"] = top_confusions(conf, names)
    return res


def top_confusions(conf: np.ndarray, class_names: Sequence[str], k: int = 10) -> dict[str, dict]:
    """The ``k`` largest off-diagonal cells of a confusion matrix ``[C, C]`` or ``[C, C+1]``:
    which class is taken for which, by pixels. Returns ``{"<class> -> <predicted>": {"class",
    "predicted", "pixels", "share"}}`` (``share``: percent of the class's pixels; the predicted
    name ``"(none)"`` is the void column), largest first."""
    conf = np.asarray(conf, dtype=np.float64)
    c = conf.shape[0]
    off = conf.copy()
    off[np.arange(c), np.arange(c)] = 0
    gt = conf.sum(1)
    pred_names = list(class_names) + ["(none)"]
    out: dict[str, dict] = {}
    for flat in np.argsort(-off, axis=None, kind="stable")[:k]:
        g, p = divmod(int(flat), off.shape[1])
        if off[g, p] <= 0:
            break
        out[f"{class_names[g]} -> {pred_names[p]}"] = {
            "class": class_names[g], "predicted": pred_names[p], "pixels": int(off[g, p]),
            "share": 100 * float(off[g, p] / gt[g])}
    return out


def _read_label_file(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int64)


def _resize_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an int label map [h, w] to ``shape`` (H, W)."""
    h, w = labels.shape
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.int64)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


def prediction_labels(sem_seg: Any) -> np.ndarray:
    """Label map [H, W] from scores [C', H, W] (argmax) or from labels [H, W]."""
    arr = to_numpy(sem_seg)
    if arr.ndim == 3:
        return arr.argmax(0).astype(np.int64)
    if arr.ndim == 2:
        return arr.astype(np.int64)
    raise ValueError(f"output['sem_seg'] must be scores [C,H,W] or labels [H,W]; got {arr.shape}.")


def ground_truth_labels(inp: dict) -> np.ndarray:
    """Ground-truth label map [H, W] from ``input['sem_seg']`` or ``input['sem_seg_file_name']``."""
    if inp.get("sem_seg") is not None:
        return to_numpy(inp["sem_seg"]).astype(np.int64)
    if inp.get("sem_seg_file_name"):
        return _read_label_file(inp["sem_seg_file_name"])
    raise KeyError("The input has neither 'sem_seg' nor 'sem_seg_file_name'; valid GT keys: "
                   "sem_seg, sem_seg_file_name.")


class SemSegEvaluator(DatasetEvaluator):
    """Confusion-matrix semantic segmentation evaluator (mIoU, fwIoU, mACC, pACC).

    ``process`` reads ``input["sem_seg"]`` (long [H, W], ``ignore_label`` ignored) or
    ``input["sem_seg_file_name"]``, and ``output["sem_seg"]`` (scores [C', H, W] or labels
    [H, W]). When the ground truth in the input has another size than the prediction, the file is
    read if there is one, else the prediction is resized (nearest) to the ground truth.
    """

    name = "sem_seg"

    def __init__(self, num_classes: int, ignore_label: int = 255,
                 class_names: Sequence[str] | None = None,
                 is_seen: Sequence[bool] | None = None, present_only: bool = True,
                 is_thing: Sequence[bool] | None = None):
        check_class_lists(num_classes, class_names=class_names, is_seen=is_seen,
                          is_thing=is_thing)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.class_names = list(class_names) if class_names is not None else None
        self.is_seen = list(is_seen) if is_seen is not None else None
        self.is_thing = list(is_thing) if is_thing is not None else None
        self.present_only = bool(present_only)
        self.reset()

    def reset(self) -> None:
        self._conf = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred = prediction_labels(out["sem_seg"])
            gt = ground_truth_labels(inp)
            if gt.shape != pred.shape and inp.get("sem_seg_file_name"):
                gt = _read_label_file(inp["sem_seg_file_name"])
            if gt.shape != pred.shape:
                pred = _resize_nearest(pred, gt.shape)
            self._conf += confusion_matrix(gt, pred, self.num_classes, self.ignore_label)

    @property
    def confusion(self) -> np.ndarray:
        """The accumulated confusion matrix [C, C+1] (a copy)."""
        return self._conf.copy()

    def state(self) -> np.ndarray:
        return self._conf.copy()

    def merge(self, states: Sequence[Any]) -> None:
        for s in states:
            s = np.asarray(s, dtype=np.int64)
            if s.shape != self._conf.shape:
                raise ValueError(
                    f"State of shape {s.shape}; this evaluator's is {self._conf.shape}.")
            self._conf += s

    def compute(self) -> dict:
        return semantic_metrics(self._conf, self.class_names, self.is_seen, self.present_only,
                                self.is_thing)


def build_sem_seg_evaluator(dataset_name: str | None, cfg: Any = None, *, metadata: Any = None,
                            **kwargs: Any) -> SemSegEvaluator:
    """A :class:`SemSegEvaluator` from a dataset's metadata (``kwargs`` override)."""
    meta = dataset_metadata(dataset_name, metadata)
    names = meta_get(meta, "class_names") or [c[0] for c in meta_get(meta, "classes")]
    args = dict(num_classes=len(names), ignore_label=meta_get(meta, "ignore_label", 255),
                class_names=names, is_seen=meta_get(meta, "is_seen"),
                is_thing=meta_get(meta, "is_thing"))
    if cfg is not None:
        args["present_only"] = bool(cfg.TEST.MIOU_PRESENT_ONLY)
    args.update(kwargs)
    return SemSegEvaluator(**args)


build_sem_seg_evaluator.__name__ = "sem_seg"
EVALUATOR_REGISTRY.register(build_sem_seg_evaluator)
