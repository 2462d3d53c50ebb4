"""The iteration-based trainer (a small detectron2 ``DefaultTrainer``).

``Trainer(cfg)`` builds the model, optimizer, LR schedule and checkpointer from the config; the
``build_*`` classmethods are the places to override. ``resume_or_load`` restores the last
checkpoint (model, optimizer, schedule, scaler, RNG states, data position) or loads
``MODEL.WEIGHTS``; ``train`` runs iterations ``start_iter .. SOLVER.MAX_ITER``.

One step: ``model(batch) -> dict of scalar losses``; their sum is back-propagated, gradients are
clipped to ``SOLVER.CLIP_GRADIENTS`` (0 = off) and the optimizer and schedule step. A non-finite
loss stops training with ``FloatingPointError`` naming the iteration and the loss terms, before
anything is written. With more than one process the model is wrapped in
``DistributedDataParallel`` (or sharded with FSDP2 when ``SOLVER.FSDP``, see ``fsdp.py``);
every process loads its own share of the global batch.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from typing import Any, Iterator

import torch
from torch import nn

from . import comm
from .checkpoint import Checkpointer, load_model_weights, unwrap_model
from .fsdp import full_model_state, is_sharded, shard_model
from .hooks import EvalHook, HookBase, MetricsWriter, PeriodicCheckpointer, preserve_rng

__all__ = ["Trainer", "resolve_device", "build_optimizer", "build_lr_scheduler", "lr_factor"]

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_EMBED_NAMES = ("pos_embed", "positional_embedding", "position_embedding", "cls_token",
                "class_embedding", "query_embed", "query_feat", "level_embed", "logit_scale")


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` -> device; "auto" and "cuda" pick this process's GPU (``LOCAL_RANK``)."""
    name = str(name).lower()
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"MODEL.DEVICE must be 'auto', 'cpu' or 'cuda[:N]'; got {name!r}.")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE is {name!r} but CUDA is not available; use 'cpu'.")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", comm.get_local_rank() % torch.cuda.device_count())


def _no_decay(module: nn.Module, name: str, param: nn.Parameter) -> bool:
    return (
        param.ndim <= 1
        or isinstance(module, (*_NORM_TYPES, nn.Embedding, nn.EmbeddingBag))
        or any(e in name for e in _EMBED_NAMES)
    )


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD (``SOLVER.OPTIMIZER``) over trainable parameters; no weight decay for
    norms, biases and embeddings."""
    decay, no_decay, seen = [], [], set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if _no_decay(module, p_name, p) else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("The model has no trainable parameters (all have requires_grad=False).")
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    raise ValueError(f"Unknown SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r}; valid: ADAMW, SGD.")


_SCHEDULES = ("cosine", "poly", "constant")


def lr_factor(step: int, *, max_iter: int, schedule: str, warmup_iters: int,
              warmup_factor: float, poly_power: float) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based): linear warm-up times the
    main schedule (cosine to 0, poly, or constant)."""
    progress = min(step, max_iter) / max(1, max_iter)
    if schedule == "cosine":
        main = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "poly":
        main = (1.0 - progress) ** poly_power
    elif schedule == "constant":
        main = 1.0
    else:
        raise ValueError(
            f"Unknown SOLVER.LR_SCHEDULER {schedule!r}; valid: {', '.join(_SCHEDULES)}"
        )
    if step < warmup_iters:
        alpha = step / warmup_iters
        main *= warmup_factor * (1.0 - alpha) + alpha
    return main


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + ``SOLVER.LR_SCHEDULER`` as a ``LambdaLR`` stepped once per iteration."""
    schedule = str(cfg.SOLVER.LR_SCHEDULER).lower()
    kw = dict(max_iter=int(cfg.SOLVER.MAX_ITER), schedule=schedule,
              warmup_iters=int(cfg.SOLVER.WARMUP_ITERS),
              warmup_factor=float(cfg.SOLVER.WARMUP_FACTOR),
              poly_power=float(cfg.SOLVER.POLY_POWER))
    lr_factor(0, **kw)  # validates the schedule name now, not at the first step

    def factor(step: int) -> float:
        return lr_factor(step, **kw)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Train ``cfg``'s model; see the module docstring. Attributes after construction:
    ``model`` (maybe DDP-wrapped), ``optimizer``, ``scheduler``, ``scaler`` (CUDA AMP only),
    ``checkpointer``, ``hooks``, ``start_iter``, ``max_iter``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg.MODEL.DEVICE)
        model = self.build_model(cfg).to(self.device)
        self.fsdp = bool(cfg.SOLVER.FSDP) and comm.get_world_size() > 1
        if self.fsdp:  # shard before the optimizer is built: it must hold the shards
            model = shard_model(model)
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.amp = bool(cfg.SOLVER.AMP)
        self.scaler = (torch.amp.GradScaler("cuda")
                       if self.amp and self.device.type == "cuda" else None)
        self.model = model if self.fsdp else self._wrap(model)
        self.checkpointer = Checkpointer(
            model, cfg.OUTPUT_DIR, optimizer=self.optimizer, scheduler=self.scheduler,
            scaler=self.scaler, keep_last=cfg.SOLVER.KEEP_LAST,
        )
        self.start_iter = 0
        self.iter = 0
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.finished = False
        self.last_metrics: dict[str, Any] = {}
        self.eval_results: dict = {}
        self.hooks: list[HookBase] = []
        self.register_hooks(self.build_hooks())

    # ---- builders (override in subclasses) ----
    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        """``META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)``."""
        from mmmask.registry import META_ARCH_REGISTRY

        name = cfg.MODEL.META_ARCHITECTURE
        if name not in META_ARCH_REGISTRY.names():
            for module in ("mmmask.modeling", "mmmask.cm3", "mmmask.evaluation"):  # registers
                with contextlib.suppress(ModuleNotFoundError):
                    __import__(module)
        model = META_ARCH_REGISTRY.get(name)(cfg)
        logger.info("Model %s: %.2f M parameters", name,
                    sum(p.numel() for p in model.parameters()) / 1e6)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int = 0) -> Iterator[list[dict]]:
        """Infinite iterator of this process's batches (lists of model-input dicts), positioned
        at ``start_iter``: ``mmmask.data.loader.build_train_loader``."""
        from mmmask.data.loader import build_train_loader

        return build_train_loader(cfg, comm.get_rank(), comm.get_world_size(), start_iter)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str):
        """``TEST.TASK``'s evaluator from ``EVALUATOR_REGISTRY`` (None without evaluation)."""
        try:
            from mmmask.evaluation.runner import TASKS
        except ImportError:
            return None
        from mmmask.registry import EVALUATOR_REGISTRY

        name = TASKS.get(cfg.TEST.TASK, cfg.TEST.TASK)
        return EVALUATOR_REGISTRY.get(name)(dataset_name, cfg)

    @classmethod
    def test(cls, cfg, model: nn.Module) -> dict[str, dict]:
        """Evaluate ``model`` on every ``DATASETS.TEST`` name -> ``{dataset: metrics}``.

        Uses ``mmmask.evaluation.runner.evaluate_dataset``; skipped (``{}``) when that is absent.
        """
        if not cfg.DATASETS.TEST:
            return {}
        try:
            from mmmask.evaluation.runner import evaluate_dataset
        except ImportError as e:
            logger.warning("Evaluation skipped: mmmask.evaluation.runner unavailable (%s).", e)
            return {}
        model = unwrap_model(model)
        if is_sharded(model):  # forward passes of a sharded model are collective: evaluate an
            # unsharded copy so that each process can run its own share of the images
            state = full_model_state(model, all_ranks=True)
            model = cls.build_model(cfg).to(next(iter(state.values())).device)
            model.load_state_dict(state)
        was_training = model.training
        model.eval()
        try:
            results = {name: evaluate_dataset(cfg, model, name) for name in cfg.DATASETS.TEST}
        finally:
            model.train(was_training)
        return results

    def build_hooks(self) -> list[HookBase]:
        """Checkpointing, evaluation and metric writing, in this order."""
        cfg = self.cfg
        writer = MetricsWriter(cfg.OUTPUT_DIR, cfg.LOG_PERIOD, cfg.SOLVER.IMS_PER_BATCH)
        return [
            PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, self.max_iter),
            EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model), writer),
            writer,
        ]

    def register_hooks(self, hooks: list[HookBase | None]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if comm.get_world_size() == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        unused = bool(self.cfg.SOLVER.FIND_UNUSED_PARAMETERS)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=unused
        )

    # ---- state ----
    def resume_or_load(self, resume: bool = True) -> int:
        """Restore ``OUTPUT_DIR/last_checkpoint`` (with ``resume``) or load ``MODEL.WEIGHTS``
        (then ``MODEL.GENERATOR_WEIGHTS``' mask generator over it)."""
        self.start_iter = self.checkpointer.resume_or_load(
            self.cfg.MODEL.WEIGHTS, resume=resume,
            parts={"mask_generator.": (self.cfg.MODEL.GENERATOR_WEIGHTS,
                                       "MODEL.GENERATOR_WEIGHTS")})
        self.iter = self.start_iter
        return self.start_iter

    def load_weights(self, path: str, strict: bool = False) -> None:
        load_model_weights(unwrap_model(self.model), path, strict=strict)

    def data_position(self, iteration: int) -> dict[str, int]:
        """Where the loader stands after ``iteration`` steps (saved in checkpoints)."""
        return {"iteration": int(iteration),
                "samples": int(iteration) * int(self.cfg.SOLVER.IMS_PER_BATCH)}

    # ---- loop ----
    def train(self) -> dict:
        """Run iterations ``start_iter .. MAX_ITER``; returns the last evaluation results."""
        logger.info("Training from iteration %d to %d", self.start_iter, self.max_iter)
        self.checkpointer.remove_stale_temp_files()
        loader = self.build_train_loader
        params = inspect.signature(loader).parameters
        source = (loader(self.cfg, start_iter=self.start_iter) if "start_iter" in params
                  else loader(self.cfg))
        self._data_iter = iter(source)
        # The loader's one-off set-up (e.g. DataLoader drawing its base seed at the first batch)
        # must not move the global RNG: a resumed run starts it at another point of the stream.
        with preserve_rng():
            self._first_batch = next(self._data_iter) if self.start_iter < self.max_iter else None
        self.finished = False
        self.model.train()
        try:
            for h in self.hooks:
                h.before_train()
            for self.iter in range(self.start_iter, self.max_iter):
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                for h in self.hooks:
                    h.after_step()
            self.iter = self.max_iter
            self.finished = True
        finally:
            for h in self.hooks:
                h.after_train()
        return self.eval_results

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def run_step(self) -> None:
        """One iteration: load, forward, check the loss, backward, clip, step."""
        t0 = time.perf_counter()
        batch, self._first_batch = self._first_batch, None
        if batch is None:
            batch = next(self._data_iter)
        data_time = time.perf_counter() - t0
        inner = unwrap_model(self.model)
        if hasattr(inner, "on_train_iter"):
            inner.on_train_iter(self.iter)
        with self._autocast():
            loss_dict = self.model(batch)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise TypeError(
                f"In train mode model(batch) must return a non-empty dict of scalar losses; got "
                f"{type(loss_dict).__name__}."
            )
        total = sum(v.float() for v in loss_dict.values())
        self._check_finite(total, loss_dict)
        self.optimizer.zero_grad(set_to_none=True)
        clip = float(self.cfg.SOLVER.CLIP_GRADIENTS)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                self._clip(clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip > 0:
                self._clip(clip)
            self.optimizer.step()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        self.last_metrics = {
            "losses": {k: float(v.detach().float().item()) for k, v in loss_dict.items()},
            "lr": lr,
            "data_time": data_time,
            "time": time.perf_counter() - t0,
        }

    def _clip(self, max_norm: float) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def _check_finite(self, total: torch.Tensor, loss_dict: dict) -> None:
        local_ok = bool(torch.isfinite(total.detach()))
        n_bad = comm.all_reduce_sum([0.0 if local_ok else 1.0])[0]  # all processes stop together
        if n_bad == 0:
            return
        terms = ", ".join(f"{k}={float(v.detach().float()):.6g}" for k, v in loss_dict.items())
        where = " on another process; here" if local_ok else ""
        last = (self.checkpointer.get_checkpoint_file()
                if self.checkpointer.has_checkpoint() else "none yet")
        raise FloatingPointError(
            f"Loss is not finite at iteration {self.iter + 1}{where}: {terms}. Training stopped "
            f"before this step was applied; the last good checkpoint ({last}) is kept. Lower "
            f"SOLVER.BASE_LR or set SOLVER.CLIP_GRADIENTS, then resume with --resume."
        )
