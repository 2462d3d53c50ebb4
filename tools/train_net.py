#!/usr/bin/env python
"""Train (or evaluate) a config with the mmmask engine.

    python tools/train_net.py --config-file configs/shapes/X.yaml [--num-gpus N] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --resume          # continue a killed run
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.safetensors
    torchrun --nproc_per_node 2 tools/train_net.py --config-file ...

Without CUDA, ``--num-gpus N`` starts N CPU processes (gloo). OUTPUT_DIR receives config.yaml,
log.txt, metrics.jsonl, TensorBoard events, checkpoints, last_checkpoint and
model_final.safetensors. Bad input (config keys, files, shapes) ends with one line on stderr and
exit code 2; a diverged run (non-finite loss) with exit code 1.
"""

from __future__ import annotations

import json
import os
import sys

import torch.multiprocessing as mp

from mmmask.config import ConfigError
from mmmask.engine import (
    Trainer,
    comm,
    default_argument_parser,
    default_setup,
    launch,
    load_model_weights,
    resolve_device,
    setup,
)

_BAD_INPUT = (ConfigError, FileNotFoundError, KeyError, ValueError)


def main(args) -> dict:
    cfg = setup(args)
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg).to(resolve_device(cfg.MODEL.DEVICE))
        if cfg.MODEL.WEIGHTS:
            load_model_weights(model, cfg.MODEL.WEIGHTS, strict=True)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            from mmmask.evaluation.runner import jsonable  # NaN -> null

            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(jsonable(results), f, indent=2)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and not isinstance(e, ConfigError) and e.args:
        return str(e.args[0])  # KeyError's str() would quote the message
    return str(e)


def _error(msg: str) -> None:
    prefix = f"[rank {comm.get_rank()}] " if comm.get_world_size() > 1 else ""
    print(f"train_net.py: error: {prefix}{msg}", file=sys.stderr, flush=True)


def guarded_main(args) -> None:
    """``main`` that turns bad input into one line on stderr and ``SystemExit``."""
    try:
        main(args)
    except _BAD_INPUT as e:
        _error(_message(e))
        raise SystemExit(2) from None
    except FloatingPointError as e:
        _error(str(e))
        raise SystemExit(1) from None


def cli(argv: list[str] | None = None) -> int:
    args = default_argument_parser().parse_args(argv)
    try:
        setup(args)  # fail fast on a bad config, before any process starts
    except _BAD_INPUT as e:
        _error(_message(e))
        return 2
    try:
        launch(guarded_main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except SystemExit as e:
        return int(e.code or 0)
    except mp.ProcessExitedException as e:  # a spawned process failed (its message is printed)
        return e.exit_code if e.exit_code and e.exit_code > 0 else 1
    except mp.ProcessRaisedException as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
