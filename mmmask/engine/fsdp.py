"""Fully sharded data parallel training (``SOLVER.FSDP``), for the CM3 decoder and other large
models.

With ``SOLVER.FSDP: True`` and more than one process, the trainer shards the model with PyTorch's
``fully_shard`` (FSDP2) instead of wrapping it in ``DistributedDataParallel``: each process keeps
one shard of every parameter, gradient and optimizer state; the full parameters of one unit are
gathered just for its forward/backward. Units are the modules a model lists in
``fsdp_units()`` (the CM3 decoder's transformer blocks), then the model itself (the rest:
embeddings, head, frozen parts).

Checkpoints stay single files: the full model and optimizer states are gathered to rank 0 to be
written, and every rank reads the file and keeps its shard when resuming. The model state and the
exported safetensors are the same as unsharded training's (they load into an unsharded model);
the optimizer state is keyed by parameter name, so resume FSDP runs with FSDP on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["shard_model", "is_sharded", "full_model_state", "full_optimizer_state",
           "load_full_model_state", "load_full_optimizer_state"]


def _api():
    try:
        from torch.distributed.checkpoint import state_dict as sd
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError as e:  # pragma: no cover - torch without FSDP2
        raise RuntimeError(f"SOLVER.FSDP needs torch.distributed.fsdp.fully_shard ({e})") from None
    return fully_shard, FSDPModule, sd


def shard_model(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place (its ``fsdp_units()`` first, then the root); returns it.

    Rank 0's parameters and buffers are broadcast first, as DDP does when it wraps a model.
    Needs an initialised process group; build the optimizer afterwards (it must see the sharded
    parameters).
    """
    import torch.distributed as dist

    fully_shard, _, _ = _api()
    with torch.no_grad():  # like DDP: every process starts from rank 0's parameters and buffers
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)
    units = list(model.fsdp_units()) if hasattr(model, "fsdp_units") else []
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def _options(sd_module, *, cpu_offload: bool, strict: bool = True):
    return sd_module.StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload, strict=strict)


def full_model_state(model: nn.Module, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """Collective: the full (unsharded) state dict; on rank 0 only unless ``all_ranks``."""
    _, _, sd = _api()
    return sd.get_model_state_dict(model, options=_options(sd, cpu_offload=not all_ranks))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: the full optimizer state keyed by parameter name (rank 0; ``{}`` elsewhere)."""
    _, _, sd = _api()
    return sd.get_optimizer_state_dict(model, optimizer, options=_options(sd, cpu_offload=True))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor],
                          strict: bool = True) -> None:
    """Collective: every rank passes the same full state dict and keeps its shard."""
    _, _, sd = _api()
    result = sd.set_model_state_dict(model, state,
                                     options=_options(sd, cpu_offload=False, strict=strict))
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(f"State does not fit the sharded model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any]) -> None:
    """Collective: restore a full optimizer state (as :func:`full_optimizer_state` gives)."""
    _, _, sd = _api()
    sd.set_optimizer_state_dict(model, optimizer, state,
                                options=_options(sd, cpu_offload=False))
