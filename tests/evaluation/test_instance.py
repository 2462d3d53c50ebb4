import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmmask.evaluation import InstanceEvaluator

from eval_fixtures import IS_THING, NUM_CLASSES, random_case


def _reference(inputs, outputs):
    """COCOeval on the same data, built by hand."""
    images, anns, dets = [], [], []
    for inp, out in zip(inputs, outputs):
        iid = inp["image_id"] + 1
        images.append({"id": iid, "height": 32, "width": 32})
        inst = inp["instances"]
        for m, c, t in zip(inst["masks"].numpy(), inst["classes"].tolist(),
                           inst["is_thing"].tolist()):
            if not t or not m.any():
                continue
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c + 1,
                         "segmentation": rle, "area": float(mask_util.area(rle)),
                         "bbox": list(mask_util.toBbox(rle)), "iscrowd": 0})
        d = out["instances"]
        for m, c, s in zip(d["masks"].numpy(), d["classes"].tolist(), d["scores"].tolist()):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            dets.append({"image_id": iid, "category_id": c + 1, "segmentation": rle, "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k + 1, "name": str(k)} for k in range(3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = []
    for k in range(3):
        p = ev.eval["precision"][:, :, k, 0, -1]
        per_class.append(100 * p[p > -1].mean())
    return 100 * ev.stats[:6], per_class


def test_ap_equals_pycocotools():
    inputs, outputs = random_case(0, n_images=8)
    ev = InstanceEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING,
                           class_names=["a", "b", "c", "s"], is_seen=[True, False, True, True])
    ev.process(inputs, outputs)
    res = ev.evaluate()
    stats, per_class = _reference(inputs, outputs)
    for key, ref in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats):
        if ref < 0:
            assert np.isnan(res[key])
        else:
            assert res[key] == pytest.approx(ref, abs=1e-9)
    assert 0 < res["AP"] < 100
    assert list(res["per_class"]) == ["a", "b", "c"]  # stuff class not evaluated
    assert [res["per_class"][n] for n in "abc"] == pytest.approx(per_class)
    assert res["AP_seen"] == pytest.approx((per_class[0] + per_class[2]) / 2)
    assert res["AP_unseen"] == pytest.approx(per_class[1])


def test_no_detections_gives_zero_ap():
    inputs, outputs = random_case(1, n_images=2)
    for out in outputs:
        inst = out["instances"]
        out["instances"] = {"masks": inst["masks"][:0], "scores": inst["scores"][:0],
                            "classes": inst["classes"][:0]}
    ev = InstanceEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING)
    ev.process(inputs, outputs)
    assert ev.evaluate()["AP"] == 0.0
