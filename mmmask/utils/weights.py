"""Reading and checking weight files: safetensors or ``torch.load(weights_only=True)`` only.

The shipped Shapes-OV weights are named ``shipped:<file>`` and resolve inside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["SHIPPED_DIR", "resolve_weights", "load_state_dict_file", "load_matching",
           "save_safetensors", "sparsify_rows", "densify_rows", "stored_rows"]

# Row-sparse storage of embedding tables whose untouched rows are zero: "<key>.__rows" (int64
# row ids), "<key>.__values" (those rows) and "<key>.__shape" (the dense shape).
_ROWS, _VALUES, _SHAPE = ".__rows", ".__values", ".__shape"


def sparsify_rows(state: dict[str, torch.Tensor], key: str, keep: torch.Tensor) -> dict:
    """Store only rows ``keep`` (bool mask or ids) of ``state[key]``; other rows load as zeros."""
    dense = state.pop(key)
    rows = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
    state[key + _ROWS] = rows.long()
    state[key + _VALUES] = dense[rows]
    state[key + _SHAPE] = torch.tensor(list(dense.shape), dtype=torch.long)
    return state


def densify_rows(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`sparsify_rows` for every row-sparse entry of ``state``."""
    for key in [k[: -len(_ROWS)] for k in state if k.endswith(_ROWS)]:
        rows, values = state.pop(key + _ROWS), state.pop(key + _VALUES)
        shape = state.pop(key + _SHAPE).tolist()
        dense = values.new_zeros(shape)
        dense[rows] = values
        state[key] = dense
    return state


def stored_rows(path: str, key_suffix: str, shape: tuple[int, int]) -> torch.Tensor:
    """Bool[rows]: the rows a safetensors file stores of its row-sparse table whose key ends with
    ``key_suffix`` and whose dense shape is ``shape`` (read without loading the other tensors)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.endswith(key_suffix + _ROWS):
                stem = key[: -len(_ROWS)]
                if tuple(f.get_tensor(stem + _SHAPE).tolist()) == tuple(shape):
                    keep = torch.zeros(shape[0], dtype=torch.bool)
                    keep[f.get_tensor(key).long()] = True
                    return keep
    raise ValueError(f"{path} stores no row-sparse {key_suffix} of shape {tuple(shape)}")


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"


def resolve_weights(path: str) -> str:
    """``shipped:<file>`` -> the file inside ``mmmask/weights``; other paths unchanged."""
    if path.startswith("shipped:"):
        return str(SHIPPED_DIR / path.split(":", 1)[1])
    return os.path.expanduser(path)


def load_state_dict_file(path: str, config_key: str = "MODEL.WEIGHTS") -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a .safetensors or torch file (no arbitrary unpickling).

    Torch files holding ``{"model": state_dict, ...}`` (training checkpoints) or
    ``{"state_dict": ...}`` are unwrapped.
    """
    path = resolve_weights(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file not found: {path} (set {config_key} to an existing file)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return densify_rows(load_file(path, device="cpu"))
        except Exception as e:
            raise ValueError(f"Cannot read safetensors file {path}: {e}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"Cannot read weight file {path} with weights_only=True ({type(e).__name__}); "
            "only plain state dicts or safetensors are accepted."
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    return obj


def load_matching(module: torch.nn.Module, state: dict, source: str = "checkpoint",
                  strict: bool = True) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``module`` after checking every shape; returns (missing, unexpected).

    A shape mismatch always raises ``ValueError`` naming the keys; with ``strict`` missing or
    unexpected keys raise too (listing a few of them).
    """
    own = module.state_dict()
    bad = [f"{k}: {tuple(v.shape)} in {source} vs {tuple(own[k].shape)} in the model"
           for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(
            f"{len(bad)} weight shapes in {source} do not match the model (wrong architecture or "
            f"config?): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        )
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source} does not fit the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    module.load_state_dict(state, strict=False)
    return missing, unexpected


def save_safetensors(state: dict[str, torch.Tensor], path: str, half: bool = False) -> None:
    """Write ``state`` as safetensors atomically (temp file + rename); optionally in float16."""
    from safetensors.torch import save_file

    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous().clone()
    tmp = f"{path}.tmp.{os.getpid()}"
    save_file(out, tmp)
    os.replace(tmp, path)
