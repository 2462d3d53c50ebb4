"""Shipped-weight export: token-embedding rows kept are those any CLIP training run updated."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmmask.config import get_cfg
from mmmask.utils.ship import export_shipped
from mmmask.utils.weights import densify_rows


def _ckpt(path, rows):
    sq = torch.zeros(10, 4)
    sq[rows] = 1.0
    torch.save({"optimizer": {"state": {0: {"exp_avg_sq": torch.ones(3)},
                                        1: {"exp_avg_sq": sq}}}}, path)
    return str(path)


def test_embedding_rows_are_the_union_of_the_training_runs(tmp_path):
    table = torch.arange(40, dtype=torch.float32).reshape(10, 4) + 1
    weights = tmp_path / "w.safetensors"
    save_file({"clip.token_embedding.weight": table, "head.w": torch.ones(2)}, str(weights))
    first, second = _ckpt(tmp_path / "a.pth", [1, 2]), _ckpt(tmp_path / "b.pth", [5])
    w, y = export_shipped(get_cfg(), str(weights), "t", str(tmp_path / "out"), [first, second])
    stored = load_file(w)
    assert stored["clip.token_embedding.weight.__rows"].tolist() == [0, 1, 2, 5]
    dense = densify_rows(dict(stored))["clip.token_embedding.weight"].float()
    keep = [0, 1, 2, 5]
    assert torch.equal(dense[keep], table[keep].half().float())
    assert dense[[3, 4, 6, 7, 8, 9]].abs().sum() == 0
    one, _ = export_shipped(get_cfg(), str(weights), "u", str(tmp_path / "out"), first)
    assert load_file(one)["clip.token_embedding.weight.__rows"].tolist() == [0, 1, 2]


def test_a_model_tuned_from_a_shipped_file_keeps_the_rows_that_file_stores(tmp_path):
    table = torch.arange(40, dtype=torch.float32).reshape(10, 4) + 1
    weights = tmp_path / "w.safetensors"
    save_file({"clip.token_embedding.weight": table, "head.w": torch.ones(2)}, str(weights))
    shipped, _ = export_shipped(get_cfg(), str(weights), "s", str(tmp_path / "out"),
                                _ckpt(tmp_path / "a.pth", [3, 7]))
    tuned = densify_rows(dict(load_file(shipped)))  # fine-tuned: the frozen table as loaded
    tuned["head.w"] = tuned["head.w"] * 2
    tuned_path = tmp_path / "tuned.safetensors"
    save_file(tuned, str(tuned_path))
    again, _ = export_shipped(get_cfg(), str(tuned_path), "t", str(tmp_path / "out"), shipped)
    stored = load_file(again)
    assert stored["clip.token_embedding.weight.__rows"].tolist() == [0, 3, 7]
    assert torch.equal(stored["head.w"].float(), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="row-sparse token_embedding.weight of shape"):
        export_shipped(get_cfg(), str(tuned_path), "v", str(tmp_path / "out"), str(tuned_path))
