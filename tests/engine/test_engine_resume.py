"""A run SIGKILLed mid-training resumes from its last checkpoint with identical losses."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from engine_toy import REPO, run_toy, toy_opts

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_toy.py")
MAX_ITER, PERIOD = 12, 3


def _losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    return {r["iteration"]: (r["loss_mse"], r["loss_reg"], r["lr"]) for r in recs}


def _opts(out):
    return toy_opts(out, MODEL__META_ARCHITECTURE="EngineToyDropoutNet",
                    SOLVER__MAX_ITER=MAX_ITER, SOLVER__CHECKPOINT_PERIOD=PERIOD)


@pytest.mark.parametrize("kill", ["at_random_iteration", "inside_second_save"])
def test_killed_run_resumes_exactly(tmp_path, kill):
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = run_toy(_opts(ref_dir))
    expected = _losses(ref_dir)
    assert sorted(expected) == list(range(1, MAX_ITER + 1))

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kill == "at_random_iteration":
        kill_at = random.Random().randint(PERIOD + 1, MAX_ITER - 1)  # after >= 1 checkpoint
        env["ENGINE_TOY_KILL_AT"] = str(kill_at)
        resume_from = (kill_at - 1) // PERIOD * PERIOD
    else:
        kill_at = None
        env["ENGINE_TOY_KILL_IN_SAVE"] = "2"  # dies writing model_0000006.pth
        resume_from = PERIOD
    proc = subprocess.run([sys.executable, SCRIPT, *_opts(run_dir)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stdout[-2000:], proc.stderr[-2000:])
    last = open(os.path.join(run_dir, "last_checkpoint")).read().strip()
    assert last == f"model_{resume_from:07d}.pth", (kill_at, last)
    killed = _losses(run_dir)
    if kill_at is not None:
        assert max(killed) == kill_at - 1  # steps after the checkpoint are redone on resume
    assert all(killed[i] == expected[i] for i in killed), kill_at  # same run up to the kill

    resumed = run_toy(_opts(run_dir), resume=True)
    assert resumed.start_iter == resume_from
    got = _losses(run_dir)
    assert sorted(got) == list(range(1, MAX_ITER + 1))  # killed run's extra lines were dropped
    for it in range(1, MAX_ITER + 1):
        assert got[it] == expected[it], (kill, kill_at, it, got[it], expected[it])
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
