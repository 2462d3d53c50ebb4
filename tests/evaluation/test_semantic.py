import numpy as np
import pytest
import torch
from PIL import Image

from mmmask.evaluation import SemSegEvaluator, confusion_matrix, semantic_metrics
from mmmask.evaluation.semantic import harmonic_mean, top_confusions

# 4 classes (0..3), void prediction index 4; class 2 is predicted but absent from the ground truth,
# class 3 is absent from both.
GT = np.array([
    [0, 0, 1, 1],
    [0, 0, 1, 1],
    [0, 255, 1, 1],
    [255, 255, 1, 1],
])
PRED = np.array([
    [0, 0, 1, 2],
    [0, 1, 1, 1],
    [4, 0, 1, 1],
    [0, 0, 1, 1],
])
NAMES = ["a", "b", "c", "d"]
IOU = [3 / 5, 7 / 9, 0.0]  # classes 0, 1, 2; class 3 undefined
ACC = [3 / 5, 7 / 8]


def _check(res, present_only):
    assert res["mIoU_present"] == pytest.approx(100 * sum(IOU) / 3)
    assert res["mIoU_all"] == pytest.approx(100 * sum(IOU) / 4)
    assert res["mACC_present"] == pytest.approx(100 * sum(ACC) / 2)
    assert res["mACC_all"] == pytest.approx(100 * sum(ACC) / 4)
    key = "present" if present_only else "all"
    assert res["mIoU"] == res[f"mIoU_{key}"]
    assert res["mACC"] == res[f"mACC_{key}"]
    assert res["pACC"] == pytest.approx(100 * 10 / 13)
    assert res["fwIoU"] == pytest.approx(100 * (5 / 13 * 3 / 5 + 8 / 13 * 7 / 9))
    pc = res["per_class"]
    assert pc["a"]["IoU"] == pytest.approx(60.0) and pc["a"]["ACC"] == pytest.approx(60.0)
    assert pc["b"]["IoU"] == pytest.approx(700 / 9) and pc["b"]["ACC"] == pytest.approx(87.5)
    assert pc["c"]["IoU"] == 0.0 and pc["c"]["ACC"] is None
    assert pc["d"] == {"IoU": None, "ACC": None}


def test_confusion_matrix_counts_void_predictions_as_wrong():
    conf = confusion_matrix(GT, PRED, 4)
    assert conf.shape == (4, 5) and conf.dtype == np.int64
    assert conf.sum() == 13  # 3 ignored pixels
    assert conf[0].tolist() == [3, 1, 0, 0, 1]
    assert conf[1].tolist() == [0, 7, 1, 0, 0]
    assert conf[2:].sum() == 0


@pytest.mark.parametrize("present_only", [True, False])
def test_semantic_metrics_hand_computed(present_only):
    res = semantic_metrics(confusion_matrix(GT, PRED, 4), NAMES, present_only=present_only)
    _check(res, present_only)


@pytest.mark.parametrize("present_only", [True, False])
def test_seen_unseen_and_harmonic(present_only):
    seen = [True, False, True, False]
    res = semantic_metrics(confusion_matrix(GT, PRED, 4), NAMES, seen, present_only)
    if present_only:
        s, u = 100 * (3 / 5 + 0) / 2, 100 * 7 / 9
    else:
        s, u = 100 * (3 / 5 + 0) / 2, 100 * (7 / 9) / 2
    assert res["mIoU_seen"] == pytest.approx(s)
    assert res["mIoU_unseen"] == pytest.approx(u)
    assert res["hIoU"] == pytest.approx(2 * s * u / (s + u))
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_things_and_stuff_split_with_seen_and_unseen():
    # IoU 0.6 / 0.778 / 0 / undefined for a, b, c, d; things a, c (seen a, unseen c), stuff b, d
    seen, thing = [True, False, False, True], [True, False, True, False]
    conf = confusion_matrix(GT, PRED, 4)
    res = semantic_metrics(conf, NAMES, seen, True, thing)
    assert res["mIoU_things"] == pytest.approx(100 * (3 / 5 + 0) / 2)
    assert res["mIoU_stuff"] == pytest.approx(100 * 7 / 9)  # d has no IoU: left out
    assert res["mIoU_things_seen"] == pytest.approx(60.0)
    assert res["mIoU_things_unseen"] == pytest.approx(0.0)
    assert res["mIoU_stuff_unseen"] == pytest.approx(700 / 9)
    assert np.isnan(res["mIoU_stuff_seen"])  # only d, absent
    assert "mIoU_things_seen" not in semantic_metrics(conf, NAMES, None, True, thing)
    assert "mIoU_things" not in semantic_metrics(conf, NAMES, seen, True)
    with pytest.raises(ValueError, match="is_thing needs one flag per class"):
        semantic_metrics(conf, NAMES, seen, True, thing[:3])
    ev = SemSegEvaluator(4, class_names=NAMES, is_seen=seen, is_thing=thing)
    ev.process([{"sem_seg": torch.from_numpy(GT)}], [{"sem_seg": torch.from_numpy(PRED)}])
    assert ev.compute()["mIoU_things_seen"] == pytest.approx(60.0)


@pytest.mark.parametrize("present_only", [True, False])
def test_evaluator_scores_and_labels(present_only, tmp_path):
    scores = torch.nn.functional.one_hot(torch.as_tensor(PRED), 5).permute(2, 0, 1).float()
    ev = SemSegEvaluator(num_classes=4, class_names=NAMES, present_only=present_only)
    ev.process([{"sem_seg": torch.as_tensor(GT)}], [{"sem_seg": scores}])
    _check(ev.evaluate(), present_only)

    path = tmp_path / "gt.png"
    Image.fromarray(GT.astype(np.uint8)).save(path)
    ev2 = SemSegEvaluator(num_classes=4, class_names=NAMES, present_only=present_only)
    ev2.process([{"sem_seg_file_name": str(path)}], [{"sem_seg": torch.as_tensor(PRED)}])
    _check(ev2.evaluate(), present_only)
    assert np.array_equal(ev.confusion, ev2.confusion)


def test_6x6_two_images_accumulate():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 3, (6, 6)) for _ in range(2)]
    preds = [rng.integers(0, 4, (6, 6)) for _ in range(2)]  # 3 = void prediction
    gts[0][0, :] = 255
    ev = SemSegEvaluator(num_classes=3)
    ev.process([{"sem_seg": torch.as_tensor(g)} for g in gts],
               [{"sem_seg": torch.as_tensor(p)} for p in preds])
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    keep = g != 255
    g, p = g[keep], p[keep]
    ious = [((g == c) & (p == c)).sum() / ((g == c) | (p == c)).sum() for c in range(3)]
    res = ev.evaluate()
    assert res["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert res["pACC"] == pytest.approx(100 * (g == p).mean())


def test_bad_input():
    with pytest.raises(ValueError):
        SemSegEvaluator(num_classes=0)
    with pytest.raises(ValueError):
        semantic_metrics(np.zeros((3, 5)))
    ev = SemSegEvaluator(num_classes=3)
    with pytest.raises(KeyError, match="sem_seg"):
        ev.process([{}], [{"sem_seg": torch.zeros(2, 2)}])


def test_prediction_resized_to_ground_truth():
    pred = torch.tensor([[0, 1], [2, 1]])  # 2x2 -> nearest to 4x4 blocks
    gt = pred.repeat_interleave(2, 0).repeat_interleave(2, 1)
    ev = SemSegEvaluator(num_classes=3)
    ev.process([{"sem_seg": gt}], [{"sem_seg": pred}])
    assert ev.evaluate()["mIoU"] == pytest.approx(100.0)


def test_top_confusions_rank_the_wrong_pixels_and_print():
    from mmmask.evaluation.runner import format_metrics

    conf = np.array([[5, 3, 0, 2], [1, 9, 0, 0], [0, 4, 0, 6]])  # 3 classes + void column
    top = top_confusions(conf, ["a", "b", "c"], k=3)
    assert list(top) == ["c -> (none)", "c -> b", "a -> b"]  # by pixels, largest first
    assert top["c -> (none)"] == {"class": "c", "predicted": "(none)", "pixels": 6,
                                  "share": pytest.approx(60.0)}
    assert top["a -> b"]["share"] == pytest.approx(30.0)
    assert list(top_confusions(np.eye(3, dtype=int), ["a", "b", "c"])) == []  # nothing wrong
    res = semantic_metrics(conf, ["a", "b", "c"])
    assert list(res["confusions"])[:2] == ["c -> (none)", "c -> b"]
    text = format_metrics(res)
    assert "most confused" in text and "(none)" in text
    assert "\nconfusions" not in text  # not printed a second time as nested results
