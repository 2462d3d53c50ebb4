import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmmask.data import DatasetCatalog, register_dataset_root, shapes
from mmmask.data.export import write_shapes_dataset

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "make_shapes_ov.py")


def test_classes_json_content(shapes_root):
    spec = json.loads((shapes_root / "classes.json").read_text())
    assert spec["classes"] == [list(s) for s in shapes.CLASS_SYNONYMS]
    assert set(spec["thing"]) | set(spec["stuff"]) == set(shapes.CLASS_NAMES)
    assert set(spec["unseen"]) == {n for n, s in zip(shapes.CLASS_NAMES, shapes.IS_SEEN) if not s}


def test_parallel_export_matches_serial(tmp_path):
    write_shapes_dataset(str(tmp_path / "a"), {"test": 8}, size=32, seed=1, workers=1)
    write_shapes_dataset(str(tmp_path / "b"), {"test": 8}, size=32, seed=1, workers=2)
    for rel in ("annotations/panoptic_test.json", "annotations/instances_test.json"):
        assert (tmp_path / "a" / rel).read_text() == (tmp_path / "b" / rel).read_text()
    for rel in ("images/test/000007.png", "annotations/test/000003.png",
                "annotations/panoptic_test/000005.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / rel)),
                                      np.asarray(Image.open(tmp_path / "b" / rel)))


def test_coco_only_format(tmp_path):
    write_shapes_dataset(str(tmp_path), {"val": 2}, size=32, formats=["coco"], workers=1)
    assert not (tmp_path / "classes.json").exists()
    names = register_dataset_root(tmp_path, "conly")
    assert set(names) == {"conly_val", "conly_val_panoptic", "conly_val_instances"}
    assert len(DatasetCatalog.get("conly_val")) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="user, coco"):
        write_shapes_dataset(str(tmp_path), {"val": 1}, formats=["yaml"])
    with pytest.raises(ValueError, match="split"):
        write_shapes_dataset(str(tmp_path), {"captions": 1})


def _script():
    spec = importlib.util.spec_from_file_location("make_shapes_ov", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    main = _script().main
    assert main(["--out", str(out), "--train", "2", "--val", "1", "--test", "0", "--size", "32",
                 "--workers", "1"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert sorted(os.listdir(out / "images")) == ["train", "val"]
    assert main(["--out", str(out), "--formats", "bad"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_subprocess(tmp_path):
    res = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(tmp_path), "--train", "1", "--val", "0",
         "--test", "0", "--size", "32"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
