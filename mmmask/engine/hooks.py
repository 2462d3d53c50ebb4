"""Training hooks: periodic checkpoints, periodic evaluation, metric writers.

A hook sees the trainer (``hook.trainer``) and is called ``before_train``, ``before_step``,
``after_step`` and ``after_train`` (the last one also after a failure; ``trainer.finished`` tells
whether every iteration ran). Inside ``after_step`` the step just done is ``trainer.iter + 1``
(iterations are counted from 1 in files and logs: ``model_0000500.pth`` holds the state after 500
steps). Hooks that communicate across processes run on every rank; only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from . import comm
from .checkpoint import Checkpointer, atomic_write, export_safetensors

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = [
    "HookBase",
    "PeriodicCheckpointer",
    "EvalHook",
    "MetricsWriter",
    "preserve_rng",
    "flatten_metrics",
]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; every method is a no-op."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


@contextmanager
def preserve_rng() -> Iterator[None]:
    """Run a block (e.g. evaluation) without changing the python/numpy/torch RNG streams."""
    py, npst = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npst)


class PeriodicCheckpointer(HookBase):
    """Save ``model_<iter>.pth`` every ``period`` steps; at the end ``model_final.pth`` and
    ``model_final.safetensors`` (weights only). Nothing is saved after a failed step."""

    def __init__(self, checkpointer: Checkpointer, period: int, max_iter: int):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.max_iter = int(max_iter)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.max_iter:
            self.checkpointer.save(f"model_{it:07d}", it,
                                   data_position=self.trainer.data_position(it))

    def after_train(self) -> None:
        if not self.trainer.finished:
            return  # a failed step: keep the last good checkpoint as it is
        ran = self.trainer.start_iter < self.max_iter  # False: resumed an already finished run
        if ran:
            self.checkpointer.save("model_final", self.max_iter,
                                   data_position=self.trainer.data_position(self.max_iter))
        path = os.path.join(self.checkpointer.save_dir, "model_final.safetensors")
        write = ran or not os.path.exists(path)  # also after a kill before it was written
        if self.checkpointer.sharded:  # every rank checks the same file system; gather first
            write = bool(comm.all_gather_object(write)[0])
            state = self.checkpointer.model_state() if write else None
        else:
            state = self.checkpointer.model
        if comm.is_main_process() and write:
            export_safetensors(state, path)
            logger.info("Wrote %s", path)


class EvalHook(HookBase):
    """Call ``eval_fn() -> dict`` every ``period`` steps (0 = never) and after the last step.

    The RNG streams are left untouched, so evaluating does not change training. Results go to
    ``writer.write_eval`` when a writer is given.
    """

    def __init__(self, period: int, eval_fn: Callable[[], dict],
                 writer: "MetricsWriter | None" = None):
        self.period = int(period)
        self.eval_fn = eval_fn
        self.writer = writer

    def _run(self, it: int) -> None:
        with preserve_rng():
            results = self.eval_fn()
        self.trainer.eval_results = results
        if results and self.writer is not None:
            self.writer.write_eval(it, results)
        comm.synchronize()

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.period > 0 and it % self.period == 0 and it < self.trainer.max_iter:
            self._run(it)

    def after_train(self) -> None:
        if self.trainer.finished and self.trainer.start_iter < self.trainer.max_iter:
            self._run(self.trainer.max_iter)


def flatten_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    """Scalar leaves of a nested metrics dict as ``{"a/b/c": float}`` (non-numbers dropped)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, name + "/"))
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            out[name] = float(v)
        elif torch.is_tensor(v) and v.numel() == 1:
            out[name] = float(v.item())
    return out


def _truncate_jsonl(path: str, max_iteration: int) -> None:
    """Keep the lines of ``path`` with ``iteration <= max_iteration`` (drops torn lines)."""
    kept = []
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and int(rec.get("iteration", 0)) <= max_iteration:
                kept.append(json.dumps(rec) + "\n")
    atomic_write(path, lambda f: f.write("".join(kept).encode()))


class MetricsWriter(HookBase):
    """Every ``period`` steps (and at the last one): console line, ``metrics.jsonl``, TensorBoard.

    Losses are averaged over the steps since the previous write and over processes. A jsonl
    record: ``{"iteration", <loss terms>, "total_loss", "lr", "samples_per_s", "data_time",
    "time", "eta_s"}``. On resume, records after the resumed iteration (from the killed run) are
    dropped so the file reads as one history.
    """

    def __init__(self, output_dir: str, period: int, ims_per_batch: int,
                 tensorboard: bool = True):
        self.output_dir = output_dir
        self.period = max(1, int(period))
        self.ims_per_batch = int(ims_per_batch)
        self.tensorboard = tensorboard
        self._tb: Any = None
        self._window: list[dict] = []

    @property
    def jsonl_path(self) -> str:
        return os.path.join(self.output_dir, "metrics.jsonl")

    def before_train(self) -> None:
        self._window = []
        if not comm.is_main_process():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        if os.path.exists(self.jsonl_path):
            _truncate_jsonl(self.jsonl_path, self.trainer.start_iter)
        if self.tensorboard and self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(self.output_dir, purge_step=self.trainer.start_iter + 1)
            except Exception as e:  # tensorboard missing or broken: keep training
                logger.warning("TensorBoard disabled (%s: %s)", type(e).__name__, e)
                self.tensorboard = False

    def after_step(self) -> None:
        self._window.append(self.trainer.last_metrics)
        it = self.trainer.iter + 1
        if it % self.period == 0 or it == self.trainer.max_iter:
            self._write(it)

    def _write(self, it: int) -> None:
        win, self._window = self._window, []
        n = len(win)
        loss_names = sorted(win[-1]["losses"])
        local = {k: sum(w["losses"][k] for w in win) / n for k in loss_names}
        losses = comm.reduce_dict(local)  # collective: every rank reaches here at the same step
        if not comm.is_main_process():
            return
        step_time = sum(w["time"] for w in win) / n
        rec: dict[str, Any] = {"iteration": it, **losses}
        rec["total_loss"] = sum(losses.values())
        rec["lr"] = win[-1]["lr"]
        rec["samples_per_s"] = self.ims_per_batch / step_time if step_time > 0 else math.inf
        rec["data_time"] = sum(w["data_time"] for w in win) / n
        rec["time"] = step_time
        rec["eta_s"] = step_time * (self.trainer.max_iter - it)
        self._append(rec)
        eta = datetime.timedelta(seconds=int(rec["eta_s"]))
        terms = "  ".join(f"{k}: {v:.4g}" for k, v in losses.items())
        logger.info(
            "iter %d/%d  total_loss: %.4g  %s  lr: %.3g  %.1f samples/s  data: %.3fs  eta: %s",
            it, self.trainer.max_iter, rec["total_loss"], terms, rec["lr"],
            rec["samples_per_s"], rec["data_time"], eta,
        )
        if self._tb is not None:
            for k in (*losses, "total_loss", "lr", "samples_per_s", "data_time", "time"):
                self._tb.add_scalar(f"train/{k}" if k in losses or k == "total_loss" else k,
                                    rec[k], it)

    def write_eval(self, it: int, results: dict) -> None:
        """Record evaluation results (rank 0): one jsonl line and TensorBoard scalars."""
        if not comm.is_main_process():
            return
        flat = flatten_metrics(results)
        self._append({"iteration": it, **{f"eval/{k}": v for k, v in flat.items()}})
        if self._tb is not None:
            for k, v in flat.items():
                self._tb.add_scalar(f"eval/{k}", v, it)

    def _append(self, rec: dict) -> None:
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def after_train(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
