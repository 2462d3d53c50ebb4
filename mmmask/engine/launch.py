"""Start one process per device and initialise ``torch.distributed`` (detectron2-style ``launch``).

Three ways a training run starts:

- ``launch(main, 1)``: ``main(*args)`` runs in this process; no process group.
- ``launch(main, N)`` (N > 1): N processes are spawned with ``torch.multiprocessing``, each joins
  a process group (``nccl`` with CUDA, one device per process; ``gloo`` on the CPU, where N means
  N CPU processes) and runs ``main(*args)``.
- under ``torchrun`` (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set): this process joins the group
  from the environment (``env://``) and runs ``main(*args)``; the process count comes from torchrun.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "started_by_torchrun", "find_free_port", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def started_by_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def find_free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _run_in_group(main_func: Callable, args: Sequence[Any]) -> None:
    try:
        if dist.get_world_size() > 1:
            dist.barrier()  # every process is up before training starts
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _init_from_env(timeout: timedelta) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(_backend(), init_method="env://", timeout=timeout)


def _worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta,
) -> None:
    rank = machine_rank * num_per_machine + local_rank
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(num_per_machine),
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        _backend(), init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    _run_in_group(main_func, args)


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` on every process of a (possibly multi-machine) job.

    Args:
        main_func: module-level function (it is pickled to spawned processes).
        num_gpus_per_machine: processes on this machine (devices with CUDA, CPU processes without).
        num_machines, machine_rank: the job's machines and this machine's index.
        dist_url: ``tcp://HOST:PORT`` of machine 0 (or ``file://``); ``"auto"`` picks a free local
            port and is valid only for one machine.
        args: positional arguments of ``main_func`` (picklable).

    A failure in a spawned process is raised here as
    ``torch.multiprocessing.ProcessRaisedException`` (an exception) or
    ``ProcessExitedException`` (a non-zero exit or a signal).
    """
    if started_by_torchrun():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if num_gpus_per_machine not in (1, local_world):
            logger.warning(
                "Started by torchrun with %d processes per machine; ignoring --num-gpus %d.",
                local_world, num_gpus_per_machine,
            )
        if not dist.is_initialized():
            _init_from_env(timeout)
        _run_in_group(main_func, args)
        return

    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"num_gpus_per_machine and num_machines must be >= 1; got {num_gpus_per_machine} and "
            f"{num_machines}."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank must be in [0, {num_machines}); got {machine_rank}.")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError('dist_url="auto" works on one machine only; pass tcp://HOST:PORT.')
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    mp.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args),
              timeout),
        daemon=False,
        start_method="spawn",
    )
