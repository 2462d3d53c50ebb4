"""Helpers over ``torch.distributed`` that are no-ops in a single process.

Every function works whether or not a process group is initialised, so library code calls them
unconditionally: without one, the world is one process of rank 0.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather_object",
    "broadcast_object",
    "reduce_dict",
    "all_reduce_sum",
]


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    """Rank inside this machine: ``LOCAL_RANK`` as set by ``launch`` or torchrun (0 if unset)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    """True on global rank 0 (and in a single process)."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() > 1:
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process). Collective."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank. Collective."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _collective_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of a list of floats over all ranks (float64). Collective."""
    if get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def reduce_dict(values: dict[str, float | torch.Tensor], average: bool = True) -> dict[str, float]:
    """Sum (or mean, with ``average``) of scalar dict values over ranks, as python floats.

    Every rank must pass the same keys. Returns the reduced dict on every rank. Collective.
    """
    keys = sorted(values)
    raw = [float(v.detach().float().item()) if torch.is_tensor(v) else float(v)
           for v in (values[k] for k in keys)]
    summed = all_reduce_sum(raw)
    n = get_world_size() if average else 1
    return {k: v / n for k, v in zip(keys, summed)}
