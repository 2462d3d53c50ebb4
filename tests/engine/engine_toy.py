"""A toy model and loader for the engine tests; run as a script it is ``tools/train_net.py``.

``EngineToyNet`` regresses ``y = w.x`` from 8 random features (``EngineToyDropoutNet`` adds dropout,
so resumed runs must restore the torch RNG to repeat the losses). The toy loader makes the global
batch of iteration ``i`` from a generator seeded with ``(SEED, i)`` and gives rank ``r`` its slice,
so a resumed or multi-process run sees the same samples as an uninterrupted single process.

Environment switches used by the subprocess tests (script mode only):
``ENGINE_TOY_KILL_AT=k`` SIGKILLs the process when step k starts; ``ENGINE_TOY_KILL_IN_SAVE=n``
SIGKILLs it inside the n-th checkpoint save, after the temporary file is written, before the rename.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Iterator

import torch
from torch import nn

from mmmask.engine import Trainer, comm
from mmmask.registry import META_ARCH_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IN_DIM = 8


class EngineToyNet(nn.Module):
    """Tiny MLP; ``forward(batch)`` -> ``{"loss_mse", "loss_reg"}`` in train mode."""

    dropout = 0.0

    def __init__(self, cfg=None):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(IN_DIM, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(self.dropout),
            nn.Linear(16, 1),
        )
        self.nan_at = int(os.environ.get("ENGINE_TOY_NAN_AT", "0"))  # 1-based step, 0 = never
        self.kill_at = int(os.environ.get("ENGINE_TOY_KILL_AT", "0"))
        self.step = 0
        self.seen_iters: list[int] = []

    def fsdp_units(self) -> list[nn.Module]:
        """Under ``SOLVER.FSDP`` each linear layer is its own shard unit."""
        return [self.net[0], self.net[4]]

    def on_train_iter(self, iteration: int) -> None:
        self.step = iteration + 1
        self.seen_iters.append(iteration)
        if self.kill_at and self.step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])  # (B, IN_DIM)
        y = torch.stack([d["y"] for d in batch])  # (B, 1)
        out = self.net(x)
        loss = nn.functional.mse_loss(out, y)
        if self.nan_at and self.step == self.nan_at:
            loss = loss * float("nan")
        return {"loss_mse": loss, "loss_reg": 1e-3 * out.pow(2).mean()}


class EngineToyDropoutNet(EngineToyNet):
    dropout = 0.3


for _cls in (EngineToyNet, EngineToyDropoutNet):
    if _cls.__name__ not in META_ARCH_REGISTRY.names():
        META_ARCH_REGISTRY.register(_cls)


def toy_batches(seed: int, global_batch: int, rank: int, world_size: int,
                start_iter: int) -> Iterator[list[dict]]:
    """Infinite batches: this rank's slice of iteration i's global batch, from ``start_iter``."""
    if global_batch % world_size:
        raise ValueError(f"IMS_PER_BATCH {global_batch} not divisible by {world_size} processes")
    local = global_batch // world_size
    w = torch.linspace(-1, 1, IN_DIM)
    torch.randint(2**31, ())  # like DataLoader drawing its base seed from the global RNG
    it = start_iter
    while True:
        g = torch.Generator().manual_seed(seed * 100_003 + it)
        x = torch.randn(global_batch, IN_DIM, generator=g)
        y = (x @ w)[:, None] + 0.1 * torch.randn(global_batch, 1, generator=g)
        lo = rank * local
        yield [{"x": x[i], "y": y[i]} for i in range(lo, lo + local)]
        it += 1


def toy_train_loader(cls, cfg, start_iter: int = 0) -> Iterator[list[dict]]:
    return toy_batches(cfg.SEED, cfg.SOLVER.IMS_PER_BATCH, comm.get_rank(),
                       comm.get_world_size(), start_iter)


class ToyTrainer(Trainer):
    build_train_loader = classmethod(toy_train_loader)


def toy_opts(output_dir: str, **overrides) -> list[str]:
    """KEY VALUE overrides of a small, fast, deterministic toy run."""
    opts = {
        "MODEL.META_ARCHITECTURE": "EngineToyNet",
        "MODEL.DEVICE": "cpu",
        "DATASETS.TEST": "()",
        "SOLVER.MAX_ITER": 8,
        "SOLVER.IMS_PER_BATCH": 4,
        "SOLVER.BASE_LR": 0.01,
        "SOLVER.WARMUP_ITERS": 2,
        "SOLVER.CHECKPOINT_PERIOD": 3,
        "SOLVER.KEEP_LAST": 2,
        "LOG_PERIOD": 1,
        "SEED": 7,
        "DETERMINISTIC": True,
        "NUM_THREADS": 1,
        "OUTPUT_DIR": output_dir,
    }
    opts.update({k.replace("__", "."): v for k, v in overrides.items()})
    return [str(x) for kv in opts.items() for x in kv]


def _kill_in_nth_save(n: int) -> None:
    """Make the n-th ``.pth`` rename SIGKILL this process (temp file written, target untouched)."""
    real_replace = os.replace
    count = [0]

    def replace(src, dst, *a, **kw):
        if str(dst).endswith(".pth"):
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **kw)

    os.replace = replace


def run_toy(opts: list[str], resume: bool = False, trainer_cls: type = ToyTrainer) -> Trainer:
    """``tools/train_net.py``'s training path in this process (setup, default_setup, train)."""
    import argparse

    from mmmask.engine import default_setup, setup

    args = argparse.Namespace(config_file="", opts=list(opts), resume=resume, eval_only=False)
    cfg = setup(args)
    default_setup(cfg, args)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def ddp_main(opts: list[str], resume: bool = False) -> None:
    """Entry point of ``launch`` in the multi-process test (module level: it is pickled)."""
    run_toy(opts, resume=resume)


def fsdp_eval_main(opts: list[str], out_file: str) -> None:
    """Train under FSDP, then evaluate: the evaluation must get an unsharded model, and the
    ranks run different numbers of forward passes (no collective may hide in them)."""
    import json

    import mmmask.evaluation.runner as runner
    from mmmask.engine.fsdp import is_sharded

    def fake_evaluate(cfg, model, name):
        assert not is_sharded(model)
        x = torch.linspace(-1, 1, IN_DIM)[None]
        for _ in range(1 + comm.get_rank()):
            y = model.net(x)
        return {"y": float(y)}

    runner.evaluate_dataset = fake_evaluate
    trainer = run_toy(opts)
    if comm.is_main_process():
        with open(out_file, "w") as f:
            json.dump(trainer.eval_results, f)


def cm3_fsdp_main(opts: list[str]) -> None:
    """Train a tiny CM3 document model (the real meta-architecture and loader) for ``opts``."""
    run_toy(opts, trainer_cls=Trainer)


# Script mode (also the __mp_main__ of spawned workers): patch the loader, load train_net.
if __name__ in ("__main__", "__mp_main__"):
    Trainer.build_train_loader = classmethod(toy_train_loader)  # type: ignore[method-assign]
    sys.path.insert(0, os.path.join(REPO, "tools"))
    if os.environ.get("ENGINE_TOY_KILL_IN_SAVE"):
        _kill_in_nth_save(int(os.environ["ENGINE_TOY_KILL_IN_SAVE"]))

if __name__ == "__main__":
    import train_net  # noqa: E402

    sys.exit(train_net.cli())
