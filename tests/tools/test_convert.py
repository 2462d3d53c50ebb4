"""Checkpoint conversion on synthetic state dicts with the official key names and shapes."""

import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from mmmask.utils.convert import convert_official, detect_variant, load_official_checkpoint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "shapes", "pmp.yaml")
QD, PRED = "mask_generator.query_decoder.", "sem_seg_head.predictor."


@pytest.fixture(scope="module")
def target():
    from mmmask.config import load_cfg
    from mmmask.modeling import build_model

    cfg = load_cfg(CONFIG, ["MODEL.CLIP.PRETRAINED", "", "MODEL.PMP.DEC_LAYERS", 2])
    return build_model(cfg).state_dict()


def _r(t):
    return torch.randn(tuple(t.shape)) if t.is_floating_point() else t.clone()


def official(target, variant="mask_adapter_fcclip"):
    """An official-looking state dict shaped after the tiny mmmask model."""
    sd = {"backbone.clip_model." + k[len("backbone.clip."):]: _r(v)
          for k, v in target.items() if k.startswith("backbone.clip.")}
    sd["sem_seg_head.pixel_decoder.transformer.level_embed"] = torch.randn(3, 128)
    sd[PRED + "query_feat.weight"] = _r(target[QD + "query_feat.weight"])
    sd[PRED + "query_embed.weight"] = _r(target[QD + "query_pos.weight"])
    sd[PRED + "level_embed.weight"] = _r(target[QD + "level_embed.weight"])
    sd[PRED + "class_embed.layers.0.weight"] = torch.randn(128, 128)
    for i in range(3):  # one layer more than the target has
        for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            shape = target[QD + f"layers.0.self_attn.attn.{name}"].shape
            sd[PRED + f"transformer_self_attention_layers.{i}.self_attn.{name}"] = \
                torch.randn(shape)
            sd[PRED + f"transformer_cross_attention_layers.{i}.multihead_attn.{name}"] = \
                torch.randn(shape)
        sd[PRED + f"transformer_ffn_layers.{i}.linear1.weight"] = torch.randn(512, 128)
        sd[PRED + f"transformer_ffn_layers.{i}.linear2.weight"] = torch.randn(128, 512)
    if variant.startswith("mask_adapter"):
        for b in (1, 2, 3):
            p = f"mask_adapter.cnext{b}."
            sd.update({p + "dwconv.weight": torch.randn(128, 1, 7, 7), p + "dwconv.bias":
                       torch.randn(128), p + "norm.weight": torch.randn(128), p + "norm.bias":
                       torch.randn(128), p + "pwconv1.weight": torch.randn(512, 128),
                       p + "pwconv1.bias": torch.randn(512), p + "pwconv2.weight":
                       torch.randn(128, 512), p + "pwconv2.bias": torch.randn(128),
                       p + "gamma": torch.rand(128)})
        sd["mask_adapter.norm.weight"] = torch.randn(128)
        sd["mask_adapter.final.weight"] = torch.randn(8, 128, 1, 1)
        sd["mask_adapter.fuse.weight"] = torch.randn(128, 768, 1, 1)  # D_emb 768 in, not 256
        sd["mask_adapter.mask_downscaling.0.weight"] = torch.randn(4, 1, 3, 3)
    if variant == "mask_adapter_maftp":
        sd["cdt.layers.0.weight"] = torch.randn(4, 4)
    sd["void_embedding.weight"] = torch.randn(1, 128)
    return sd


def test_mask_adapter_fcclip_mapping(target):
    src = official(target)
    assert detect_variant(src) == "mask_adapter_fcclip"
    rep = convert_official(src, target)
    mapped = {s: t for s, t, _ in rep.mapped}
    unused = dict(rep.unused)
    assert mapped["backbone.clip_model.visual.trunk.stem.0.weight"] == \
        "backbone.clip.visual.trunk.stem.0.weight"
    assert mapped[PRED + "query_embed.weight"] == QD + "query_pos.weight"
    assert mapped[PRED + "transformer_cross_attention_layers.1.multihead_attn.in_proj_weight"] \
        == QD + "layers.1.cross_attn.attn.in_proj_weight"
    assert mapped[PRED + "transformer_ffn_layers.0.linear2.weight"] == \
        QD + "layers.0.ffn.net.3.weight"
    assert mapped["mask_adapter.cnext2.pwconv1.weight"] == "classifier.blocks.1.fc1.weight"
    assert mapped["mask_adapter.final.weight"] == "classifier.to_maps.weight"
    # layer scale folded: gamma * (W x + b) == (gamma W) x + gamma b
    g = src["mask_adapter.cnext1.gamma"]
    assert torch.allclose(rep.state["classifier.blocks.0.fc2.weight"],
                          src["mask_adapter.cnext1.pwconv2.weight"] * g[:, None])
    assert torch.allclose(rep.state["classifier.blocks.0.fc2.bias"],
                          src["mask_adapter.cnext1.pwconv2.bias"] * g)
    assert rep.state["classifier.void_embedding"].shape == (128,)
    assert "MSDeformAttn" in unused["sem_seg_head.pixel_decoder.transformer.level_embed"]
    assert "shape" in unused["mask_adapter.fuse.weight"]
    assert "smaller model" in unused["mask_adapter.cnext3.dwconv.weight"]
    assert "smaller model" in unused[PRED + "transformer_ffn_layers.2.linear1.weight"]
    assert "mask stem" in unused["mask_adapter.mask_downscaling.0.weight"]
    assert "classifier.mask_stem.0.weight" in rep.missing
    assert QD + "layers.0.text_attn.attn.in_proj_weight" in rep.missing
    assert not any(k.startswith("backbone.clip.") for k in rep.missing)
    assert len(rep.mapped) + len(rep.unused) == len(src)
    from mmmask.utils.weights import load_matching

    class Holder(torch.nn.Module):  # the target's keys and shapes, to load into
        def __init__(self):
            super().__init__()
            for i, (k, v) in enumerate(target.items()):
                self.register_buffer(f"b{i}", v.clone())
            self.keys = list(target)

        def state_dict(self, *a, **kw):
            return dict(zip(self.keys, self.buffers()))

    load_matching(Holder(), rep.state, strict=False)  # shapes all agree


def test_fcclip_and_maftp_variants(target):
    src = official(target, "fcclip")
    assert detect_variant(src) == "fcclip"
    rep = convert_official(src, target)
    assert dict((s, t) for s, t, _ in rep.mapped)["void_embedding.weight"] == QD + "void_embed"
    src = official(target, "mask_adapter_maftp")
    assert detect_variant(src) == "mask_adapter_maftp"
    rep = convert_official(src, target)
    assert "content-dependent" in dict(rep.unused)["cdt.layers.0.weight"]
    with pytest.raises(ValueError, match="valid variants"):
        detect_variant({"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="valid"):
        convert_official(src, target, variant="odise")


def test_checkpoint_formats(tmp_path):
    sd = {"backbone.clip_model.logit_scale": torch.tensor(2.0)}
    torch.save({"model": sd, "iteration": 5}, tmp_path / "a.pth")
    assert set(load_official_checkpoint(str(tmp_path / "a.pth"))) == set(sd)
    with open(tmp_path / "b.pkl", "wb") as f:  # detectron2 model-zoo style: numpy arrays
        pickle.dump({"model": {"mask_adapter.final.weight": np.ones((2, 3), np.float32)},
                     "__author__": "x"}, f)
    got = load_official_checkpoint(str(tmp_path / "b.pkl"))
    assert got["mask_adapter.final.weight"].shape == (2, 3)

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    with open(tmp_path / "c.pkl", "wb") as f:
        pickle.dump({"model": {"x": Evil()}}, f)
    with pytest.raises(ValueError, match="refusing"):
        load_official_checkpoint(str(tmp_path / "c.pkl"))
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(str(tmp_path / "missing.pth"))


def test_tool_writes_safetensors_and_report(target, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import convert_checkpoint

    torch.save({"model": official(target)}, tmp_path / "ma.pth")
    out, rep = tmp_path / "ma.safetensors", tmp_path / "report.json"
    code = convert_checkpoint.main([str(tmp_path / "ma.pth"), "--config-file", CONFIG,
                                    "--output", str(out), "--report", str(rep),
                                    "MODEL.PMP.DEC_LAYERS", "2"])
    assert code == 0 and out.is_file()
    report = json.loads(rep.read_text())
    assert report["variant"] == "mask_adapter_fcclip" and report["missing"]
    from safetensors.torch import load_file

    assert "classifier.to_maps.weight" in load_file(str(out))
