"""Packaging trained weights as a shipped model: a float16 safetensors file plus its config.

The CLIP token-embedding table is large (49,408 rows) but training only updates the rows of
tokens its captions use; the others never receive a gradient. Those rows are found from the
optimizer state of the CLIP pretraining run (rows whose Adam second moment is non-zero) and only
they are stored (:func:`mmmask.utils.weights.sparsify_rows`); the rest load as zeros. A model
fine-tuned from a shipped file (its token table frozen) keeps the rows that file stores.
"""

from __future__ import annotations

import os

import torch

from mmmask.utils.weights import (SHIPPED_DIR, load_state_dict_file, resolve_weights,
                                  save_safetensors, sparsify_rows, stored_rows)

__all__ = ["touched_rows", "export_shipped"]

TOKEN_EMBEDDING = "token_embedding.weight"


def touched_rows(checkpoint: str, shape: tuple[int, int]) -> torch.Tensor:
    """Bool[rows]: rows of the parameter of ``shape`` that the optimizer ever updated, from a
    training checkpoint (.pth with its optimizer state), or the rows a shipped safetensors file
    stores of a row-sparse table of that shape (``shipped:<file>`` or a path)."""
    path = resolve_weights(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file not found: {path} (--embedding-rows-from)")
    if path.endswith(".safetensors"):
        return stored_rows(path, TOKEN_EMBEDDING, shape)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("optimizer", {}).get("state", {})
    for entry in state.values():
        sq = entry.get("exp_avg_sq")
        if sq is not None and tuple(sq.shape) == tuple(shape):
            return sq.abs().sum(dim=1) > 0
    raise ValueError(f"{checkpoint} has no optimizer state for a parameter of shape {shape}")


def export_shipped(cfg, weights: str, name: str, out_dir: str | None = None,
                   embedding_rows_from: str | list[str] | None = None) -> tuple[str, str]:
    """Write ``<name>.safetensors`` (float16) and ``<name>.yaml`` (full config) into ``out_dir``.

    The YAML points ``MODEL.WEIGHTS`` at ``shipped:<name>.safetensors`` and clears the paths of
    the training run (``MODEL.CLIP.PRETRAINED``, ``CM3.VQ.WEIGHTS``) since the file holds every
    weight. ``embedding_rows_from``: the CLIP training checkpoint(s) whose optimizer states tell
    which token-embedding rows were ever trained; only those rows are stored (the others load
    as zeros). Returns the two paths.
    """
    out_dir = out_dir or str(SHIPPED_DIR)
    os.makedirs(out_dir, exist_ok=True)
    state = dict(load_state_dict_file(weights))
    if embedding_rows_from:
        sources = ([embedding_rows_from] if isinstance(embedding_rows_from, str)
                   else list(embedding_rows_from))
        for key in [k for k in state if k.endswith(TOKEN_EMBEDDING)]:
            keep = torch.stack([touched_rows(c, tuple(state[key].shape)) for c in sources]).any(0)
            keep[0] = True  # padding
            sparsify_rows(state, key, keep)
    weights_path = os.path.join(out_dir, f"{name}.safetensors")
    save_safetensors(state, weights_path, half=True)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = f"shipped:{name}.safetensors"
    cfg.MODEL.CLIP.PRETRAINED = ""
    cfg.MODEL.SAM.CHECKPOINT = cfg.MODEL.SAM.CHECKPOINT if cfg.MODEL.SAM.CHECKPOINT.startswith(
        "shipped:") else ""
    cfg.CM3.VQ.WEIGHTS = ""
    cfg.OUTPUT_DIR = "./output"
    yaml_path = os.path.join(out_dir, f"{name}.yaml")
    with open(yaml_path + ".tmp", "w") as f:
        f.write(cfg.dump())
    os.replace(yaml_path + ".tmp", yaml_path)
    return weights_path, yaml_path
