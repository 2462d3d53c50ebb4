"""Setup shared by the tools: argument parser, config loading, logging, seeding, threads.

A tool is ``args = default_argument_parser().parse_args()``, ``cfg = setup(args)``,
``default_setup(cfg, args)`` (inside every process), then library calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys

import numpy as np
import torch

from . import comm
from .checkpoint import atomic_write

__all__ = [
    "default_argument_parser",
    "default_setup",
    "setup",
    "setup_logger",
    "seed_all_rng",
    "set_deterministic",
]


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """detectron2's flags: --config-file, --resume, --eval-only, --num-gpus, --num-machines,
    --machine-rank, --dist-url, and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config file")
    parser.add_argument("--resume", action="store_true",
                        help="resume from OUTPUT_DIR/last_checkpoint when it exists (otherwise "
                        "start from MODEL.WEIGHTS)")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (GPUs with CUDA, CPU processes without)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0,
                        help="rank of this machine (unique per machine)")
    parser.add_argument("--dist-url", default="auto",
                        help="tcp://HOST:PORT of machine 0; 'auto' = a free local port")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100")
    return parser


def setup(args: argparse.Namespace):
    """``load_cfg(args.config_file, args.opts)``, frozen (raises ``ConfigError`` on bad keys)."""
    from mmmask.config import load_cfg

    return load_cfg(args.config_file or None, list(args.opts or []), freeze=True)


def setup_logger(output_dir: str | None = None, rank: int = 0, name: str = "mmmask"
                 ) -> logging.Logger:
    """Console logging (INFO on rank 0, WARNING elsewhere) plus ``OUTPUT_DIR/log.txt`` (rank 0)
    or ``log.txt.rank<N>``. Calling it again replaces the handlers it added before."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in [h for h in logger.handlers if getattr(h, "_mmmask_engine", False)]:
        logger.removeHandler(h)
        h.close()
    prefix = f"[rank {rank}] " if rank > 0 else ""
    fmt = logging.Formatter(f"[%(asctime)s %(name)s] {prefix}%(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        handlers.append(logging.FileHandler(os.path.join(output_dir, fname)))
    for h in handlers:
        h.setFormatter(fmt)
        h._mmmask_engine = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    return logger


def seed_all_rng(seed: int) -> int:
    """Seed python, numpy and torch; a negative seed draws one from the OS. Returns the seed."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def set_deterministic() -> None:
    """Deterministic kernels (warn where none exists), no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _set_threads(cfg) -> None:
    n = int(cfg.NUM_THREADS)
    if n <= 0 and comm.get_world_size() > 1 and not torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", comm.get_world_size()))
        n = max(1, (os.cpu_count() or 1) // local)  # CPU processes share the cores
    if n > 0:
        torch.set_num_threads(n)


def default_setup(cfg, args: argparse.Namespace | None = None) -> None:
    """Per process: create ``OUTPUT_DIR``, log, dump ``config.yaml`` (rank 0), seed
    ``SEED + rank``, set threads (``NUM_THREADS``) and determinism (``DETERMINISTIC``)."""
    rank = comm.get_rank()
    out = cfg.OUTPUT_DIR
    if comm.is_main_process() and out:
        os.makedirs(out, exist_ok=True)
    logger = setup_logger(out, rank)
    logger.info("Rank %d of %d; torch %s; args: %s", rank, comm.get_world_size(),
                torch.__version__, vars(args) if args is not None else {})
    if comm.is_main_process() and out:
        path = os.path.join(out, "config.yaml")
        text = cfg.dump()
        atomic_write(path, lambda f: f.write(text.encode()))
        logger.info("Full config saved to %s", path)
    seed = seed_all_rng(cfg.SEED + rank if cfg.SEED >= 0 else -1)
    logger.info("Seed %d", seed)
    _set_threads(cfg)
    if cfg.DETERMINISTIC:
        set_deterministic()
