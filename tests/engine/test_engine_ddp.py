"""Two CPU processes (gloo DDP) train to the same weights as one process with the same batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import engine_toy
from engine_toy import REPO, run_toy, toy_opts
from mmmask.engine import launch

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_toy.py")


def _opts(out):
    # no dropout: the ranks' RNG streams differ (seed SEED + rank)
    return toy_opts(out, SOLVER__MAX_ITER=6, SOLVER__CHECKPOINT_PERIOD=4,
                    SOLVER__CLIP_GRADIENTS=0.5)


def _assert_same_weights(a_dir, b_dir):
    a = load_file(os.path.join(a_dir, "model_final.safetensors"))
    b = load_file(os.path.join(b_dir, "model_final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_process_launch_matches_one_process(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_toy(_opts(one))
    launch(engine_toy.ddp_main, 2, args=(_opts(two),))
    _assert_same_weights(one, two)
    assert os.path.exists(os.path.join(two, "log.txt.rank1"))  # rank 1 logs apart
    assert os.path.exists(os.path.join(two, "model_0000004.pth"))
    # rank 0 alone wrote the metrics, one line per step
    with open(os.path.join(two, "metrics.jsonl")) as f:
        assert len(f.readlines()) == 6
    ckpt = torch.load(os.path.join(two, "model_0000004.pth"), weights_only=True)
    assert len(ckpt["rng"]) == 2  # each process's RNG state


@pytest.mark.slow
def test_train_net_under_torchrun(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_toy(_opts(one))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           SCRIPT, *_opts(two)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_weights(one, two)
