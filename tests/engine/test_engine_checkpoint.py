"""Checkpointer: round trip, keep_last, atomic saves; weight loading errors; safetensors export."""

from __future__ import annotations

import glob
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from engine_toy import EngineToyNet
from mmmask.engine import Checkpointer, export_safetensors, load_model_weights
from mmmask.engine.trainer import build_lr_scheduler, build_optimizer
from mmmask.config import get_cfg


def _setup(tmp_path, keep_last=2):
    torch.manual_seed(0)
    cfg = get_cfg()
    model = EngineToyNet()
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    return model, opt, sched, Checkpointer(model, str(tmp_path), optimizer=opt, scheduler=sched,
                                           keep_last=keep_last)


def _step(model, opt, sched):
    x = torch.randn(4, 8)
    loss = model.net(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched, ckpt = _setup(tmp_path)
    for _ in range(3):
        _step(model, opt, sched)
    random.seed(1)
    np.random.seed(2)
    ckpt.save("model_0000003", 3, extra={"note": "x"})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    raw = torch.load(tmp_path / "model_0000003.pth", weights_only=True)  # no pickled objects
    assert raw["iteration"] == 3 and raw["extra"] == {"note": "x"}
    assert raw["data_position"]["iteration"] == 3 and len(raw["rng"]) == 1

    model2, opt2, sched2, ckpt2 = _setup(tmp_path)
    start = ckpt2.resume_or_load("", resume=True)
    assert start == 3
    for k, v in model2.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    assert got[2] == expect[2]
    # the restored optimizer continues exactly like the original
    torch.manual_seed(5)
    _step(model, opt, sched)
    torch.manual_seed(5)
    _step(model2, opt2, sched2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_keep_last_prunes_old_periodic_checkpoints(tmp_path):
    model, opt, sched, ckpt = _setup(tmp_path, keep_last=2)
    for it in (2, 4, 6, 8):
        ckpt.save(f"model_{it:07d}", it)
    ckpt.save("model_final", 9)
    names = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.pth")))
    assert names == ["model_0000006.pth", "model_0000008.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert not glob.glob(str(tmp_path / ".tmp-*"))


@pytest.mark.parametrize("failing", ["torch.save", "os.replace"])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, failing):
    model, opt, sched, ckpt = _setup(tmp_path)
    _step(model, opt, sched)
    ckpt.save("model_0000001", 1)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)

    if failing == "torch.save":
        real_save = torch.save

        def broken_save(obj, f, *a, **kw):
            f.write(b"PK\x03\x04 half a zip")  # partial bytes, then the process "dies"
            raise RuntimeError("simulated crash while writing")

        monkeypatch.setattr(torch, "save", broken_save)
    else:
        real_replace = os.replace

        def broken_replace(src, dst):
            if str(dst).endswith(".pth"):
                raise OSError("simulated crash before rename")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises((RuntimeError, OSError), match="simulated crash"):
        ckpt.save("model_0000002", 2)
    monkeypatch.undo()

    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    assert not glob.glob(str(tmp_path / ".tmp-*"))  # the temporary file is cleaned up
    model2, opt2, sched2, ckpt2 = _setup(tmp_path)
    assert ckpt2.resume_or_load("", resume=True) == 1
    for k, v in model2.state_dict().items():
        assert torch.equal(v, good[k]), k


def test_weight_loading_errors(tmp_path):
    model = EngineToyNet()
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_model_weights(model, str(missing))

    other = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(),
                          nn.Linear(16, 1))
    torch.save({"net." + k: v for k, v in other.state_dict().items()}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"key net\.0\.weight: checkpoint \(16, 4\) vs model "
                                         r"\(16, 8\)"):
        load_model_weights(model, str(tmp_path / "bad.pth"))

    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("net.4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing key.*net.4.weight"):
        load_model_weights(model, str(tmp_path / "partial.pth"), strict=True)
    res = load_model_weights(model, str(tmp_path / "partial.pth"), strict=False)
    assert res.missing == ["net.4.weight", "net.4.bias"] and res.unexpected == []

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_model_weights(model, str(tmp_path / "garbage.pth"))


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("table", torch.arange(12.0).reshape(3, 4).t())  # non-contiguous


def test_export_safetensors_round_trip_with_tied_weights(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    src = _Tied()
    path = str(tmp_path / "model_final.safetensors")
    export_safetensors(src, path)
    stored = load_file(path)
    assert "emb.weight" in stored and "head.weight" not in stored  # stored once
    dst = _Tied()
    res = load_model_weights(dst, path, strict=True)
    assert res.missing == [] and res.unexpected == []
    assert dst.head.weight is dst.emb.weight
    assert torch.equal(dst.emb.weight, src.emb.weight) and torch.equal(dst.table, src.table)

    # a checkpoint written by the trainer loads as weights too
    model, opt, sched, ckpt = _setup(tmp_path / "ck")
    ckpt.save("model_final", 1)
    fresh = EngineToyNet()
    load_model_weights(fresh, str(tmp_path / "ck" / "model_final.pth"))
    assert torch.equal(fresh.net[0].weight, model.net[0].weight)


class _TwoPart(nn.Module):
    def __init__(self, extra: bool = False):
        super().__init__()
        self.mask_generator = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        if extra:  # a generator variant with one more layer (e.g. text cross-attention)
            self.mask_generator.append(nn.Linear(2, 2))
        self.classifier = nn.Linear(4, 3)


def test_parts_replace_one_submodule_after_the_weights(tmp_path):
    torch.manual_seed(0)
    whole, donor, target = _TwoPart(), _TwoPart(extra=True), _TwoPart()
    export_safetensors(whole, str(tmp_path / "whole.safetensors"))
    export_safetensors(donor, str(tmp_path / "donor.safetensors"))

    def part(prefix, name):
        return {prefix: (str(tmp_path / name), "KEY")}

    ckpt = Checkpointer(target, str(tmp_path / "run"))
    start = ckpt.resume_or_load(str(tmp_path / "whole.safetensors"), resume=True,
                                parts=part("mask_generator.", "donor.safetensors"))
    assert start == 0
    got, want_gen, want_rest = target.state_dict(), donor.state_dict(), whole.state_dict()
    for k, v in got.items():  # the donor's generator (its extra layer ignored), the rest kept
        want = want_gen if k.startswith("mask_generator.") else want_rest
        assert torch.equal(v, want[k]), k
    assert not torch.equal(got["mask_generator.0.weight"], want_rest["mask_generator.0.weight"])

    # a file with no generator, or a model with none, is one clear error
    export_safetensors(nn.ModuleDict({"classifier": nn.Linear(4, 3)}),
                       str(tmp_path / "cls.safetensors"))
    with pytest.raises(ValueError, match="holds no mask_generator"):
        Checkpointer(_TwoPart(), str(tmp_path / "r2")).resume_or_load(
            "", resume=False, parts=part("mask_generator.", "cls.safetensors"))
    with pytest.raises(FileNotFoundError, match="set KEY to an existing file"):
        Checkpointer(_TwoPart(), str(tmp_path / "r4")).resume_or_load(
            "", resume=False, parts=part("mask_generator.", "none.pt"))
    with pytest.raises(ValueError, match="has no 'pixel'"):
        Checkpointer(_TwoPart(), str(tmp_path / "r3")).resume_or_load(
            "", resume=False, parts=part("pixel.", "donor.safetensors"))

    # resuming restores the checkpoint; the part is not loaded over it
    ckpt.save("model_0000001", 1)
    fresh = _TwoPart()
    assert Checkpointer(fresh, str(tmp_path / "run")).resume_or_load(
        "", resume=True, parts=part("mask_generator.", "whole.safetensors")) == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, got[k]), k
