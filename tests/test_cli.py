"""The ``mmmask`` command: help, segment writing the DESIGN.md JSON + overlay, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mmmask.cli import main
from mmmask.data.shapes import render_sample

TINY = ["MODEL.CLIP.PRETRAINED", "", "MODEL.PMP.NUM_QUERIES", "8", "MODEL.PMP.DEC_LAYERS", "2",
        "MODEL.PMP.HIDDEN_DIM", "32", "MODEL.PMP.MASK_DIM", "32", "MODEL.PMP.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_ADAPTER.HIDDEN_DIM", "32", "INPUT.TEST_SIZE", "64", "MODEL.DEVICE", "cpu"]
CONFIG = ["--config-file", "configs/shapes/pmp.yaml"]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(render_sample(0, "test", 3, 96).image).save(path)
    return str(path)


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "mmmask.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("segment", "generate", "demo"):
        assert cmd in out


def test_demo_forwards_model_flags(monkeypatch):
    import mmmask.cli as cli

    seen = {}

    class FakeApp:
        @staticmethod
        def launch(**kw):
            seen.update(kw)
            return 0

    monkeypatch.setattr(cli, "load_demo_module", lambda: FakeApp)
    code = main(["demo", "--port", "7001", "--cm3-config-file", "c.yaml", "--cm3-weights", "w",
                 "--cm3-opts", "CM3.N_LAYER 1", "MODEL.DEVICE", "cpu"])
    assert code == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7001  # local unless told otherwise
    assert (seen["cm3_config_file"], seen["cm3_weights"]) == ("c.yaml", "w")
    assert seen["cm3_opts"] == ["CM3.N_LAYER", "1"] and seen["opts"] == ["MODEL.DEVICE", "cpu"]


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_segment_writes_json_and_overlay(image_path, tmp_path, task, capsys):
    code = main(["segment", image_path, "--vocab", "red star|red thing,blue ring,sky,grass|lawn",
                 "--task", task, "--out", str(tmp_path), *CONFIG, *TINY])
    assert code == 0
    data = json.loads((tmp_path / "scene.json").read_text())
    assert data["image"] == "scene.png" and (data["height"], data["width"]) == (96, 96)
    assert data["vocabulary"] == ["red star", "blue ring", "sky", "grass"]
    for seg in data["segments"]:
        assert set(seg) == {"id", "label", "score", "area", "bbox", "rle"}
        m = mask_utils.decode({"size": seg["rle"]["size"], "counts": seg["rle"]["counts"].encode()})
        assert m.shape == (96, 96) and int(m.sum()) == seg["area"]
        assert seg["label"] in data["vocabulary"] and isinstance(seg["rle"]["counts"], str)
    if task == "semantic":
        assert set(data["semantic"]) <= set(data["vocabulary"])
        total = sum(int(mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).sum())
                    for r in data["semantic"].values())
        assert total == 96 * 96  # every pixel gets one label
    else:
        assert "semantic" not in data
    overlay = Image.open(tmp_path / "scene.png")
    assert overlay.height >= 96 and overlay.width >= 96


def test_vocab_file_with_ids(image_path, tmp_path):
    vf = tmp_path / "classes.txt"
    vf.write_text("1: red star, red thing\n2: sky\n", encoding="utf-8")
    assert main(["segment", image_path, "--vocab-file", str(vf), "--out", str(tmp_path / "o"),
                 *CONFIG, *TINY]) == 0
    data = json.loads((tmp_path / "o" / "scene.json").read_text())
    assert data["vocabulary"] == ["red star", "sky"]


@pytest.mark.parametrize("args,needle", [
    (["--vocab", " , "], "vocabulary is empty"),
    (["--vocab", "sky,Sky"], "Duplicate class"),
    (["--task", "semantic", "MODEL.NO_SUCH_KEY", "1"], "Unknown config key"),
])
def test_bad_input_one_line_error(image_path, tmp_path, capsys, args, needle):
    code = main(["segment", image_path, "--out", str(tmp_path), *CONFIG, *args, *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_and_corrupt_images(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.png"), *CONFIG, *TINY]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["segment", str(bad), "--out", str(tmp_path / "o"), *CONFIG, *TINY])
    err = capsys.readouterr().err
    assert code != 0 and "bad.png" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "bad.json").exists()


def test_semantic_scores_are_probabilities(image_path, tmp_path):
    assert main(["segment", image_path, "--vocab", "red star,sky,grass", "--out", str(tmp_path),
                 *CONFIG, *TINY]) == 0
    data = json.loads((tmp_path / "scene.json").read_text())
    assert data["segments"] and all(0.0 <= s["score"] <= 1.0 for s in data["segments"])
