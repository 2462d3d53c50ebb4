"""tools/eval.py on a dataset folder in the user layout (classes from its classes.json)."""

import importlib.util
import json
from pathlib import Path

import pytest

from mmmask.data.export import write_shapes_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ["MODEL.CLIP.PRETRAINED", "", "MODEL.PMP.NUM_QUERIES", "8", "MODEL.PMP.DEC_LAYERS", "2",
        "MODEL.PMP.HIDDEN_DIM", "32", "MODEL.PMP.MASK_DIM", "32", "MODEL.PMP.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_ADAPTER.HIDDEN_DIM", "32", "INPUT.TEST_SIZE", "64", "MODEL.DEVICE", "cpu"]


def _eval_main():
    spec = importlib.util.spec_from_file_location("eval_tool", ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "shapes_user"
    write_shapes_dataset(str(root), {"test": 3}, size=64, seed=7, formats=("user", "coco"), workers=0)
    return root


@pytest.mark.parametrize("task,keys", [
    ("semantic", {"mIoU", "fwIoU", "mACC", "pACC", "per_class"}),
    ("panoptic", {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"}),
    ("instance", {"AP", "AP50", "AP75", "APs", "APm", "APl"}),
])
def test_eval_dataset_root(dataset, tmp_path, task, keys):
    out = tmp_path / "metrics.json"
    code = _eval_main()(["--config-file", str(ROOT / "configs/shapes/pmp.yaml"), "--dataset-root",
                         str(dataset), "--task", task, "--output", str(out), *TINY])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert keys <= set(metrics)


def test_eval_unknown_dataset_is_one_line_error(capsys):
    code = _eval_main()(["--config-file", str(ROOT / "configs/shapes/pmp.yaml"), "--dataset",
                         "no_such_dataset", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no_such_dataset" in err and len(err.splitlines()) == 1


def test_eval_oracle_names_bounds_the_model(dataset, tmp_path):
    args = ["--config-file", str(ROOT / "configs/shapes/pmp.yaml"), "--dataset-root", str(dataset),
            "--task", "semantic", *TINY]
    own, oracle = tmp_path / "own.json", tmp_path / "oracle.json"
    assert _eval_main()(args[:4] + ["--output", str(own)] + args[4:]) == 0
    assert _eval_main()(args[:4] + ["--oracle-names", "--output", str(oracle)] + args[4:]) == 0
    own_miou = json.loads(own.read_text())["mIoU"]
    oracle_miou = json.loads(oracle.read_text())["mIoU"]
    assert oracle_miou > own_miou + 5  # untrained names, the same masks named right


def test_eval_oracle_names_refuses_sam(capsys):
    code = _eval_main()(["--dataset", "shapes_ov_val", "--generator", "sam", "--oracle-names"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--oracle-names" in err and len(err.splitlines()) == 1
