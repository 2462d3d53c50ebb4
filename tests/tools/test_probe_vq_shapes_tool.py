"""tools/probe_vq_shapes.py on a VQ config + weight file, and its argument errors."""

import importlib.util
import json
from pathlib import Path

from mmmask.config import load_cfg
from mmmask.modeling import build_model
from mmmask.utils.weights import save_safetensors

ROOT = Path(__file__).resolve().parents[2]


def _main():
    spec = importlib.util.spec_from_file_location("probe_tool", ROOT / "tools/probe_vq_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_probe_tool_reads_a_config_with_overrides_and_weights(tmp_path):
    opts = ["CM3.VQ.DOWNSAMPLE", "4", "CM3.VQ.HIDDEN_DIM", "8"]
    vq = build_model(load_cfg(str(ROOT / "configs/shapes/vq.yaml"), opts))
    weights = tmp_path / "vq.safetensors"
    save_safetensors(vq.state_dict(), str(weights))
    out = tmp_path / "probe.json"
    code = _main()(["--config-file", str(ROOT / "configs/shapes/vq.yaml"), "--weights",
                    str(weights), "--num-train", "16", "--num-test", "8", "--epochs", "1",
                    "--output", str(out), *opts])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["grid"] == [vq.image_size // 4] * 2  # the override reached the model
    assert len(result["shape_accuracy"]) == 1 and result["num_test"] == 8
    assert result["kind"] == "crop"
    code = _main()(["--config-file", str(ROOT / "configs/shapes/vq.yaml"), "--weights",
                    str(weights), "--num-train", "6", "--num-test", "3", "--epochs", "1",
                    "--kind", "scene", "--output", str(out), *opts])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "scene" and result["num_test_objects"] >= 3


def test_probe_tool_wants_a_config_with_weights(tmp_path, capsys):
    assert _main()(["--weights", str(tmp_path / "vq.safetensors")]) != 0
    assert "--config-file" in capsys.readouterr().err
