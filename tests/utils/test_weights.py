"""Weight files: row-sparse embeddings round trip, shipped export, clear load errors."""

import pytest
import torch

from mmmask.config import get_cfg
from mmmask.utils.ship import export_shipped, touched_rows
from mmmask.utils.weights import (densify_rows, load_matching, load_state_dict_file,
                                  save_safetensors, sparsify_rows)


def test_sparse_rows_round_trip(tmp_path):
    emb = torch.zeros(10, 4)
    emb[[1, 7]] = torch.randn(2, 4)
    state = sparsify_rows({"a.token_embedding.weight": emb.clone(), "b": torch.ones(3)},
                          "a.token_embedding.weight", emb.abs().sum(1) > 0)
    assert state["a.token_embedding.weight.__values"].shape == (2, 4)
    path = tmp_path / "w.safetensors"
    save_safetensors(state, str(path))
    back = load_state_dict_file(str(path))
    assert torch.equal(back["a.token_embedding.weight"], emb) and torch.equal(back["b"], torch.ones(3))
    assert densify_rows({"x": torch.ones(1)}) == {"x": torch.ones(1)}


def test_touched_rows_from_optimizer_state(tmp_path):
    emb = torch.nn.Embedding(6, 3)
    opt = torch.optim.AdamW(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 4])).sum().backward()
    opt.step()
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": emb.state_dict(), "optimizer": opt.state_dict()}, ckpt)
    assert touched_rows(str(ckpt), (6, 3)).tolist() == [False, True, False, False, True, False]
    with pytest.raises(ValueError, match="no optimizer state"):
        touched_rows(str(ckpt), (5, 5))


def test_export_shipped_writes_half_weights_and_config(tmp_path):
    src = tmp_path / "w.safetensors"
    save_safetensors({"layer.weight": torch.randn(2, 2)}, str(src))
    cfg = get_cfg()
    cfg.MODEL.CLIP.PRETRAINED = "output/clip.safetensors"
    w, y = export_shipped(cfg, str(src), "demo_model", str(tmp_path / "ship"))
    assert load_state_dict_file(w)["layer.weight"].dtype == torch.float16
    text = open(y).read()
    assert "shipped:demo_model.safetensors" in text and "output/clip.safetensors" not in text


def test_load_matching_reports_shape_mismatch():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"weight: \(4, 3\) in ckpt vs \(2, 3\)"):
        load_matching(model, {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, source="ckpt")
    with pytest.raises(ValueError, match="missing"):
        load_matching(model, {"weight": torch.zeros(2, 3)}, source="ckpt")


def test_missing_file_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        load_state_dict_file(str(tmp_path / "nope.safetensors"))
