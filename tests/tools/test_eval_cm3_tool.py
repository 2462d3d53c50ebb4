"""tools/eval_cm3.py keeps the figures it measured when a later section fails."""

import importlib.util
import json
from pathlib import Path

import mmmask.evaluation.cm3_eval as cm3_eval

ROOT = Path(__file__).resolve().parents[2]


def _main():
    spec = importlib.util.spec_from_file_location("eval_cm3_tool", ROOT / "tools" / "eval_cm3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_failing_infilling_section_keeps_the_other_figures(tmp_path, monkeypatch, capsys):
    def infilling(gen, num_images):
        raise ValueError("infilling broke")

    monkeypatch.setattr(cm3_eval, "evaluate_cm3", lambda gen, seg, n, g: {"vq_psnr_db": 19.8})
    monkeypatch.setattr(cm3_eval, "evaluate_infilling", infilling)
    out = tmp_path / "cm3.json"
    code = _main()(["--no-judge", "--num-images", "2", "--output", str(out)])
    assert code != 0
    assert "infilling broke" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"vq_psnr_db": 19.8}
