"""Training engine: trainer, atomic checkpoints, distributed launch, hooks, setup helpers."""

from . import comm
from .checkpoint import (
    Checkpointer,
    LoadResult,
    export_safetensors,
    load_model_weights,
    load_state_into,
)
from .defaults import default_argument_parser, default_setup, seed_all_rng, setup, setup_logger
from .hooks import EvalHook, HookBase, MetricsWriter, PeriodicCheckpointer
from .launch import launch
from .trainer import Trainer, build_lr_scheduler, build_optimizer, resolve_device

__all__ = [
    "comm",
    "Checkpointer",
    "LoadResult",
    "export_safetensors",
    "load_model_weights",
    "load_state_into",
    "default_argument_parser",
    "default_setup",
    "seed_all_rng",
    "setup",
    "setup_logger",
    "EvalHook",
    "HookBase",
    "MetricsWriter",
    "PeriodicCheckpointer",
    "launch",
    "Trainer",
    "build_lr_scheduler",
    "build_optimizer",
    "resolve_device",
]
