"""FSDP (``SOLVER.FSDP``): two CPU processes (gloo) with sharded parameters and optimizer state
train to the weights of one unsharded process, resume exactly from a sharded run's checkpoint,
and train the real CM3 document model."""

from __future__ import annotations

import os
import shutil

import torch
from safetensors.torch import load_file

import engine_toy
from engine_toy import run_toy, toy_opts
from mmmask.engine import launch
from mmmask.engine.checkpoint import LAST_CHECKPOINT


def _opts(out, **kw):
    base = dict(SOLVER__MAX_ITER=6, SOLVER__CHECKPOINT_PERIOD=4, SOLVER__CLIP_GRADIENTS=0.5)
    return toy_opts(out, **{**base, **kw})


def _weights(d):
    return load_file(os.path.join(d, "model_final.safetensors"))


def _assert_close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_fsdp_matches_one_process_and_resumes(tmp_path):
    one, two, again = (str(tmp_path / n) for n in ("one", "two", "again"))
    run_toy(_opts(one))
    launch(engine_toy.ddp_main, 2, args=(_opts(two, SOLVER__FSDP=True),))
    _assert_close(_weights(one), _weights(two))
    # The checkpoint holds the full (unsharded) states: it loads into a plain model.
    ckpt = torch.load(os.path.join(two, "model_0000004.pth"), weights_only=True)
    plain = engine_toy.EngineToyNet()
    plain.load_state_dict(ckpt["model"])
    assert ckpt["iteration"] == 4 and len(ckpt["rng"]) == 2
    assert set(ckpt["optimizer"]["state"]) == {k for k, _ in plain.named_parameters()}
    # Resume a sharded run from that checkpoint: same final weights as the uninterrupted run.
    os.makedirs(again)
    for name in ("model_0000004.pth", "config.yaml"):
        shutil.copy(os.path.join(two, name), os.path.join(again, name))
    with open(os.path.join(again, LAST_CHECKPOINT), "w") as f:
        f.write("model_0000004.pth\n")
    launch(engine_toy.ddp_main, 2, args=(_opts(again, SOLVER__FSDP=True), True))
    _assert_close(_weights(two), _weights(again))


def test_fsdp_evaluates_an_unsharded_copy(tmp_path):
    import json

    out, result = str(tmp_path / "run"), str(tmp_path / "eval.json")
    opts = _opts(out, SOLVER__FSDP=True, SOLVER__MAX_ITER=3, DATASETS__TEST="('toy_eval',)")
    launch(engine_toy.fsdp_eval_main, 2, args=(opts, result))
    with open(result) as f:
        got = json.load(f)["toy_eval"]["y"]
    plain = engine_toy.EngineToyNet()
    plain.load_state_dict(_weights(out))
    want = float(plain.net(torch.linspace(-1, 1, engine_toy.IN_DIM)[None]))
    assert abs(got - want) < 1e-5


def test_fsdp_trains_the_cm3_decoder(tmp_path):
    out = str(tmp_path / "cm3")
    opts = ["MODEL.META_ARCHITECTURE", "CM3", "INPUT.DATASET_MAPPER", "CM3DocumentMapper",
            "DATASETS.TRAIN", "('shapes_ov_documents',)", "DATASETS.TEST", "()",
            "CM3.VQ.IMAGE_SIZE", "32", "CM3.VQ.DOWNSAMPLE", "8", "CM3.VQ.HIDDEN_DIM", "8",
            "CM3.VQ.CODEBOOK_SIZE", "16", "CM3.VQ.CODEBOOK_DIM", "8", "CM3.VQ.KMEANS_INIT",
            "False", "CM3.N_LAYER", "2", "CM3.N_HEAD", "2", "CM3.N_EMBD", "32",
            "CM3.BLOCK_SIZE", "160", "SOLVER.FSDP", "True", "SOLVER.IMS_PER_BATCH", "4",
            "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.WARMUP_ITERS", "1",
            "MODEL.DEVICE", "cpu", "NUM_THREADS", "1", "DATALOADER.NUM_WORKERS", "0",
            "LOG_PERIOD", "1", "OUTPUT_DIR", out]
    launch(engine_toy.cm3_fsdp_main, 2, args=(opts,))
    state = _weights(out)
    from mmmask.config import get_cfg
    from mmmask.registry import META_ARCH_REGISTRY

    import mmmask.cm3  # noqa: F401
    cfg = get_cfg()
    cfg.merge_from_list(opts)
    model = META_ARCH_REGISTRY.get("CM3")(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert all("lm_head" in k or "wte" in k for k in missing)  # tied weights are stored once
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert len(f.readlines()) == 3
