"""tools/train_net.py: one clear line and exit code 2 on bad input; eval-only; a short run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from engine_toy import REPO, toy_opts

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


@pytest.fixture(scope="module")
def train_net():
    spec = importlib.util.spec_from_file_location("mmmask_tools_train_net", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_config_key_exits_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITERS", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "SOLVER.MAX_ITERS" in err[0] and "SOLVER.MAX_ITER." in err[0]
    assert not os.listdir(tmp_path)  # nothing started


def test_bad_input_messages(train_net, tmp_path, capsys):
    assert train_net.cli(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0]

    weights = str(tmp_path / "absent.safetensors")
    code = train_net.cli(["--eval-only", *toy_opts(str(tmp_path / "out")),
                          "MODEL.WEIGHTS", weights])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "absent.safetensors" in err[0], err

    code = train_net.cli(toy_opts(str(tmp_path / "out2"), SOLVER__OPTIMIZER="LAMB"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "ADAMW, SGD" in err[-1], err


def test_train_then_eval_only(train_net, tmp_path, monkeypatch, capsys):
    from engine_toy import toy_train_loader
    from mmmask.engine import Trainer

    monkeypatch.setattr(Trainer, "build_train_loader", classmethod(toy_train_loader))
    out = str(tmp_path / "run")
    assert train_net.cli(toy_opts(out, SOLVER__MAX_ITER=3)) == 0
    assert os.path.exists(os.path.join(out, "model_final.safetensors"))
    # --resume on a finished run is a no-op that keeps the files
    assert train_net.cli(["--resume", *toy_opts(out, SOLVER__MAX_ITER=3)]) == 0
    weights = os.path.join(out, "model_final.safetensors")
    assert train_net.cli(["--eval-only", *toy_opts(out), "MODEL.WEIGHTS", weights]) == 0
    with open(os.path.join(out, "eval_results.json")) as f:
        assert json.load(f) == {}  # DATASETS.TEST is empty in the toy config
