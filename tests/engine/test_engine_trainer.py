"""Trainer: outputs of a run, optimizer groups, LR schedules, non-finite losses, model hooks."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from engine_toy import EngineToyNet, ToyTrainer, run_toy, toy_opts
from mmmask.config import get_cfg
from mmmask.engine import Checkpointer, export_safetensors, load_model_weights
from mmmask.engine.trainer import build_optimizer, lr_factor


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_writes_outputs(tmp_path):
    out = str(tmp_path)
    trainer = run_toy(toy_opts(out, SOLVER__MAX_ITER=5, LOG_PERIOD=2))
    files = set(os.listdir(out))
    assert {"config.yaml", "metrics.jsonl", "model_final.safetensors", "model_final.pth",
            "last_checkpoint", "log.txt", "model_0000003.pth"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    recs = _records(out)
    assert [r["iteration"] for r in recs] == [2, 4, 5]  # every LOG_PERIOD and the last step
    for r in recs:
        assert {"loss_mse", "loss_reg", "total_loss", "lr", "samples_per_s", "data_time",
                "time"} <= set(r)
        assert math.isfinite(r["total_loss"]) and r["samples_per_s"] > 0
    # the model hook saw every iteration, 0-based
    assert trainer.model.seen_iters == [0, 1, 2, 3, 4]
    # exported weights equal the trained model
    fresh = EngineToyNet()
    load_model_weights(fresh, os.path.join(out, "model_final.safetensors"), strict=True)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert "SOLVER:" in (tmp_path / "config.yaml").read_text()


def test_optimizer_skips_weight_decay_for_norms_biases_embeddings():
    cfg = get_cfg()
    model = torch.nn.Sequential(torch.nn.Embedding(5, 8), torch.nn.Linear(8, 8),
                                torch.nn.LayerNorm(8))
    opt = build_optimizer(cfg, model)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(8, 8)]
    assert decay["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY and no_decay["weight_decay"] == 0
    assert len(no_decay["params"]) == 4  # embedding, linear bias, norm weight and bias
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="ADAMW, SGD"):
        build_optimizer(cfg, model)


def test_lr_schedules():
    kw = dict(max_iter=100, warmup_iters=10, warmup_factor=0.001, poly_power=0.9)
    assert lr_factor(0, schedule="constant", **kw) == pytest.approx(0.001)
    assert lr_factor(10, schedule="constant", **kw) == 1.0
    assert lr_factor(50, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(100, schedule="cosine", **kw) == pytest.approx(0.0)
    assert lr_factor(50, schedule="poly", **kw) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(ValueError, match="cosine, poly, constant"):
        lr_factor(0, schedule="step", **kw)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path)
    monkeypatch.setenv("ENGINE_TOY_NAN_AT", "5")
    with pytest.raises(FloatingPointError, match=r"iteration 5\b.*loss_mse=nan"):
        run_toy(toy_opts(out, SOLVER__CHECKPOINT_PERIOD=2, SOLVER__MAX_ITER=8))
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert not (tmp_path / "model_final.safetensors").exists()
    assert not (tmp_path / "model_final.pth").exists()
    ckpt = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    assert ckpt["iteration"] == 4
    model = EngineToyNet()
    assert Checkpointer(model, out).resume_or_load("", resume=True) == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["iteration"] for r in _records(out)] == [1, 2, 3, 4]


class _EvalToyTrainer(ToyTrainer):
    calls: list[int] = []

    @classmethod
    def test(cls, cfg, model):
        cls.calls.append(1)
        return {"toy_val": {"score": float(torch.rand(())), "per_class": {"a": 1.0}}}


def test_periodic_eval_is_logged_and_does_not_change_training(tmp_path):
    plain, with_eval = str(tmp_path / "plain"), str(tmp_path / "eval")
    run_toy(toy_opts(plain, MODEL__META_ARCHITECTURE="EngineToyDropoutNet"))
    run_toy(toy_opts(with_eval, MODEL__META_ARCHITECTURE="EngineToyDropoutNet",
                     TEST__EVAL_PERIOD=3), trainer_cls=_EvalToyTrainer)
    assert len(_EvalToyTrainer.calls) == 3  # after steps 3 and 6, and at the end (8)
    evals = [r for r in _records(with_eval) if "eval/toy_val/score" in r]
    assert [r["iteration"] for r in evals] == [3, 6, 8]
    assert all("eval/toy_val/per_class/a" in r for r in evals)
    losses = [r["loss_mse"] for r in _records(plain)]
    assert [r["loss_mse"] for r in _records(with_eval) if "loss_mse" in r] == losses


def test_amp_bf16_on_cpu(tmp_path):
    trainer = run_toy(toy_opts(str(tmp_path), SOLVER__AMP=True, SOLVER__MAX_ITER=3))
    assert trainer.scaler is None  # no GradScaler with bf16
    recs = _records(str(tmp_path))
    assert len(recs) == 3 and all(math.isfinite(r["total_loss"]) for r in recs)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_generator_weights_key_reaches_the_loader(tmp_path):
    # MODEL.GENERATOR_WEIGHTS is loaded over MODEL.WEIGHTS when a run starts (the loading
    # itself: test_engine_checkpoint); the toy model has no mask generator to take it
    path = tmp_path / "w.safetensors"
    export_safetensors(EngineToyNet(), str(path))
    with pytest.raises(ValueError, match="no 'mask_generator'"):
        run_toy(toy_opts(str(tmp_path / "run"), SOLVER__MAX_ITER=1,
                         MODEL__GENERATOR_WEIGHTS=str(path)))
