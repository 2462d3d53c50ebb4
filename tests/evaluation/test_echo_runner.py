import json

import pytest

from mmmask.config import get_cfg
from mmmask.evaluation import GroundTruthEcho, echo_outputs, evaluate_dataset
from mmmask.registry import EVALUATOR_REGISTRY, META_ARCH_REGISTRY

from eval_fixtures import IS_THING, random_case


def _cfg(n=3):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.SHAPES.VAL_SIZE", n, "DATASETS.SHAPES.IMAGE_SIZE", 32,
                         "DATASETS.TEST", ("shapes_ov_val",)])
    return cfg


KEY = {"semantic": "mIoU", "panoptic": "PQ", "instance": "AP"}


def test_registries():
    assert {"sem_seg", "panoptic", "instance"} <= set(EVALUATOR_REGISTRY.names())
    model = META_ARCH_REGISTRY.get("GroundTruthEcho")(_cfg())
    assert isinstance(model, GroundTruthEcho)
    model.train()
    assert model([{}])["loss_echo"].item() == 0.0


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_echo_scores_100_on_shapes(task, tmp_path):
    cfg = _cfg()
    out = tmp_path / "m" / "metrics.json"
    res = evaluate_dataset(cfg, GroundTruthEcho(num_classes=0), "shapes_ov_val", task,
                           output=str(out), progress=False, show=False)
    assert res[KEY[task]] == pytest.approx(100.0)
    if task == "semantic":
        assert res["fwIoU"] == res["pACC"] == res["mACC"] == pytest.approx(100.0)
        assert res["hIoU"] == pytest.approx(100.0)
    if task == "panoptic":
        assert res["PQ_th"] == res["PQ_st"] == pytest.approx(100.0)
    if task == "instance":
        assert res["AP50"] == res["AP75"] == pytest.approx(100.0)
    saved = json.loads(out.read_text())
    assert saved[KEY[task]] == pytest.approx(100.0) and "per_class" in saved


def test_echo_in_memory_list_and_table(capsys):
    inputs, _ = random_case(9, n_images=3)
    meta = {"class_names": ["a", "b", "c", "s"], "is_thing": IS_THING,
            "is_seen": [True, False, True, True]}
    for task in KEY:
        res = evaluate_dataset(_cfg(), GroundTruthEcho(), inputs, task, metadata=meta,
                               progress=False)
        assert res[KEY[task]] == pytest.approx(100.0)
    printed = capsys.readouterr().out
    assert "PQ_th" in printed and "class" in printed


def test_echo_outputs_shapes():
    inputs, _ = random_case(10, n_images=1)
    out = echo_outputs(inputs[0], num_classes=4)
    h, w = inputs[0]["sem_seg"].shape
    assert out["sem_seg"].shape == (4, h, w)
    ids, segs = out["panoptic_seg"]
    assert ids.shape == (h, w) and len(segs) == len(inputs[0]["instances"]["classes"])
    assert out["instances"]["masks"].shape[0] == int(inputs[0]["instances"]["is_thing"].sum())


def test_runner_bad_input(tmp_path):
    with pytest.raises(ValueError, match="valid tasks"):
        evaluate_dataset(_cfg(), GroundTruthEcho(), "shapes_ov_val", "depth")
    with pytest.raises(KeyError, match="shapes_ov_val"):
        evaluate_dataset(_cfg(), GroundTruthEcho(), "shapes_ov_vall", "semantic")
    with pytest.raises(ValueError, match="metadata"):
        evaluate_dataset(_cfg(), GroundTruthEcho(), [{"image": None}], "semantic")
    with pytest.raises(ValueError, match="vocabulary has 2 classes"):
        evaluate_dataset(_cfg(), GroundTruthEcho(), "shapes_ov_val", "semantic", vocab="a,b")


def test_dataset_root(tmp_path):
    from mmmask.data import write_shapes_dataset

    write_shapes_dataset(str(tmp_path / "ds"), {"test": 2}, size=32)
    res = evaluate_dataset(_cfg(), GroundTruthEcho(), str(tmp_path / "ds"), "semantic",
                           progress=False, show=False)
    assert res["mIoU"] == pytest.approx(100.0)


def test_format_metrics_plain_table():
    from mmmask.evaluation import format_metrics

    text = format_metrics({"mIoU": 50.0, "pACC": float("nan"),
                           "per_class": {"x": {"IoU": 50.0}, "y": {"IoU": None}}}, "t")
    lines = text.splitlines()
    assert lines[0] == "t" and "mIoU" in lines[2] and "50.00" in lines[4] and "-" in lines[4]
    assert any(line.startswith("x ") for line in lines)
    assert "1 classes without data not shown" in text
