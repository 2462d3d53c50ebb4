import numpy as np
import pytest
import torch
from PIL import Image

from mmmask.evaluation import PanopticEvaluator, pq_stats

# Classes: 0 thing "A", 1 thing "B", 2 stuff "S". 6x6 image.
IS_THING = [True, True, False]
NAMES = ["A", "B", "S"]


def _gt_input():
    a = np.zeros((6, 6), bool)
    a[0:2, :] = True  # 12 px
    b = np.zeros((6, 6), bool)
    b[4:6, 4:6] = True  # 4 px
    s = np.zeros((6, 6), bool)
    s[3:6, :] = True
    s &= ~b  # 14 px
    sem = np.full((6, 6), 2)
    sem[a], sem[b] = 0, 1
    sem[2, :] = 255  # void row
    return {
        "sem_seg": torch.as_tensor(sem),
        "instances": {"masks": torch.as_tensor(np.stack([a, b, s])),
                      "classes": torch.tensor([0, 1, 2]),
                      "is_thing": torch.tensor([True, True, False])},
    }


def _pred_output():
    ids = np.zeros((6, 6), np.int64)
    ids[0:3, 0:4] = 1  # class A: 8 px on GT A + 4 px on void -> IoU 8 / (12 + 12 - 8 - 4) = 2/3
    ids[0:2, 4:6] = 2  # class B on GT A: false positive
    ids[3:6, :] = 3  # stuff S, exact ...
    ids[4:6, 4:6] = 0  # ... GT B left unlabeled: false negative
    ids[2, 4:6] = 4  # class A entirely on void: not a false positive
    segs = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1,
            "isthing": True}, {"id": 3, "category_id": 2, "isthing": False},
            {"id": 4, "category_id": 0, "isthing": True}]
    return {"panoptic_seg": (torch.as_tensor(ids), segs)}


def test_pq_hand_computed():
    ev = PanopticEvaluator(num_classes=3, is_thing=IS_THING, class_names=NAMES,
                           is_seen=[True, False, True])
    ev.process([_gt_input()], [_pred_output()])
    st = ev.state()
    assert st["tp"].tolist() == [1, 0, 1]
    assert st["fp"].tolist() == [0, 1, 0]
    assert st["fn"].tolist() == [0, 1, 0]
    assert st["ious"][0] == [pytest.approx(2 / 3)] and st["ious"][2] == [1.0]
    r = ev.evaluate()
    assert r["PQ"] == pytest.approx(100 * 5 / 9)
    assert r["SQ"] == pytest.approx(100 * 5 / 9)
    assert r["RQ"] == pytest.approx(100 * 2 / 3)
    assert r["PQ_th"] == pytest.approx(100 / 3)
    assert r["SQ_th"] == pytest.approx(100 / 3)
    assert r["RQ_th"] == pytest.approx(50.0)
    assert r["PQ_st"] == r["SQ_st"] == r["RQ_st"] == pytest.approx(100.0)
    assert r["per_class"]["A"] == pytest.approx({"PQ": 200 / 3, "SQ": 200 / 3, "RQ": 100.0})
    assert r["per_class"]["B"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
    assert r["PQ_seen"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert r["PQ_unseen"] == 0.0


def test_void_overlap_at_most_half_is_a_false_positive():
    gt = np.zeros((2, 4), np.int64)
    gt[:, :2] = 1  # segment 1 (class 0); right half void
    pred = np.zeros((2, 4), np.int64)
    pred[:, 1:3] = 7  # class 1: half on segment 1, half on void -> FP (not > 50 % void)
    st = pq_stats(gt, {1: 0}, pred, {7: 1}, 2)
    assert st["fp"].tolist() == [0, 1] and st["fn"].tolist() == [1, 0]
    pred[:, 1:4] = 7  # two thirds on void -> ignored
    st = pq_stats(gt, {1: 0}, pred, {7: 1}, 2)
    assert st["fp"].tolist() == [0, 0]


def test_ground_truth_from_png(tmp_path):
    inp = _gt_input()
    masks = inp["instances"]["masks"].numpy()
    ids = np.zeros((6, 6), np.int64)
    seg_ids = [5, 300, 70000]  # exercises all three RGB channels
    for m, sid in zip(masks, seg_ids):
        ids[m] = sid
    ids[2, :] = 0
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    png_inp = {"pan_seg_file_name": str(tmp_path / "pan.png"),
               "segments_info": [{"id": s, "category_id": c, "iscrowd": 0}
                                 for s, c in zip(seg_ids, [0, 1, 2])]}
    ev1 = PanopticEvaluator(num_classes=3, is_thing=IS_THING)
    ev1.process([inp], [_pred_output()])
    ev2 = PanopticEvaluator(num_classes=3, is_thing=IS_THING)
    ev2.process([png_inp], [_pred_output()])
    assert ev1.evaluate() == ev2.evaluate()


def test_bad_category():
    ev = PanopticEvaluator(num_classes=3, is_thing=IS_THING)
    out = _pred_output()
    out["panoptic_seg"][1][0]["category_id"] = 9
    with pytest.raises(ValueError, match="outside"):
        ev.process([_gt_input()], [out])
