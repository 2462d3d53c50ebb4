"""Atomic, resumable checkpoints and weight loading with clear errors.

A checkpoint ``OUTPUT_DIR/model_0000500.pth`` is one ``torch.save`` of tensors and primitive
containers only (``torch.load(weights_only=True)`` reads it)::

    {"format": 1, "iteration": int (completed iterations), "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ... (those given),
     "rng": [per-rank {"python", "numpy", "torch", "cuda"}], "data_position": {"iteration", ...},
     "extra": {...}}

Files are written to a temporary file in the same folder, flushed and fsynced, renamed over the
target (``os.replace``) and the folder is fsynced; ``last_checkpoint`` (the file name, one line) is
written the same way after the checkpoint. A kill at any moment leaves either the old or the new
checkpoint complete, and ``last_checkpoint`` always names a complete file.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import uuid
from typing import Any, BinaryIO, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from . import comm, fsdp

__all__ = [
    "Checkpointer",
    "LoadResult",
    "atomic_write",
    "export_safetensors",
    "get_rng_state",
    "load_model_weights",
    "load_model_part",
    "load_state_into",
    "set_rng_state",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
_TMP_PREFIX = ".tmp-"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel`` (``model`` otherwise)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------
def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` atomically: temp file, fsync, rename, fsync dir.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f"{_TMP_PREFIX}{os.path.basename(path)}.{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as umask allows
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


# ---------------------------------------------------------------------------------------------
# RNG states as tensors / primitive containers (weights_only-loadable)
# ---------------------------------------------------------------------------------------------
def get_rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA RNG states of this process, in weights_only-safe form."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [int(version), list(internal), gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states returned by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (npst["name"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("Checkpoint has %d CUDA RNG states for %d devices; not restored.",
                           len(state["cuda"]), torch.cuda.device_count())


# ---------------------------------------------------------------------------------------------
# Model weights
# ---------------------------------------------------------------------------------------------
class LoadResult(NamedTuple):
    """Keys of the model absent from the file, and keys of the file the model does not have."""

    missing: list[str]
    unexpected: list[str]


def _view_key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _alias_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """Groups of state-dict keys that are the same tensor (tied weights), in key order."""
    groups: dict[tuple, list[str]] = {}
    for k, v in state.items():
        if v.device.type != "meta" and v.numel() > 0:
            groups.setdefault(_view_key(v), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def load_state_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint",
    strict: bool = True,
) -> LoadResult:
    """Load a flat state dict into ``model`` after checking every shape.

    A shape mismatch raises ``ValueError`` listing ``key X: checkpoint (a, b) vs model (c, d)``.
    Tied weights count as present when one of their names is. With ``strict``, missing or
    unexpected keys raise ``ValueError``; otherwise they are logged and returned.
    """
    model = unwrap_model(model)
    own = model.state_dict()
    state = dict(state)
    if state and all(k.startswith("module.") for k in state) and not any(
        k.startswith("module.") for k in own
    ):
        state = {k[len("module."):]: v for k, v in state.items()}
    for group in _alias_groups(own):
        present = [k for k in group if k in state]
        for k in group:
            if present and k not in state:
                state[k] = state[present[0]]
    bad = [
        f"key {k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise ValueError(
            f"{len(bad)} weight shape(s) in {source} do not match the model (wrong config or "
            f"architecture?): " + "; ".join(bad[:8]) + (" ..." if len(bad) > 8 else "")
        )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        msg = (
            f"{source}: {len(missing)} missing key(s) {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected key(s) "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
        if strict:
            raise ValueError(f"Weights do not fit the model: {msg}")
        logger.warning("Loaded weights partially. %s", msg)
    model.load_state_dict(state, strict=False)
    return LoadResult(missing, unexpected)


def load_model_weights(model: nn.Module, path: str, strict: bool = True) -> LoadResult:
    """Load ``path`` (.safetensors, a state-dict file or a training checkpoint) into ``model``.

    ``shipped:<file>`` names a file inside ``mmmask/weights``. Raises ``FileNotFoundError`` naming
    the file, ``ValueError`` for unreadable files and shape mismatches (see
    :func:`load_state_into`).
    """
    from mmmask.utils.weights import load_state_dict_file, resolve_weights

    state = load_state_dict_file(path)
    result = load_state_into(model, state, source=resolve_weights(path), strict=strict)
    logger.info("Loaded weights from %s", path)
    return result


def export_safetensors(model: nn.Module | dict, path: str) -> None:
    """Write the model's state dict (or a state dict) to ``path`` as safetensors, atomically.

    Tensors are made contiguous and moved to the CPU; tied weights are stored once (their other
    names are listed in the metadata under ``"aliases"`` and restored by :func:`load_state_into`),
    and distinct views of one storage are copied apart.
    """
    import json

    from safetensors.torch import save as st_save

    state = model if isinstance(model, dict) else unwrap_model(model).state_dict()
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen_views: dict[tuple, str] = {}
    seen_storages: set[int] = set()
    for k, v in state.items():
        key = _view_key(v) if v.numel() > 0 else None
        if key is not None and key in seen_views:
            aliases[k] = seen_views[key]
            continue
        t = v.detach().to("cpu")
        ptr = v.untyped_storage().data_ptr() if v.numel() > 0 else None
        if ptr is not None and (ptr in seen_storages or t.untyped_storage().nbytes()
                                != t.numel() * t.element_size()):
            t = t.clone()  # a view sharing storage with another entry: store it separately
        out[k] = t.contiguous()
        if key is not None:
            seen_views[key] = k
            seen_storages.add(ptr)
    data = st_save(out, metadata={"format": "pt", "aliases": json.dumps(aliases)})
    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------
# Checkpointer
# ---------------------------------------------------------------------------------------------
class Checkpointer:
    """Save and restore the whole training state in ``save_dir``.

    ``save`` is collective under ``torch.distributed``: every rank calls it (each rank's RNG state
    is gathered), rank 0 writes the file. ``keep_last`` periodic checkpoints (``model_<iter>.pth``)
    are kept; older ones are deleted. Other names (``model_final``) are never deleted.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        keep_last: int = 2,
    ):
        self.model = unwrap_model(model)
        self.sharded = fsdp.is_sharded(self.model)  # FSDP: states are gathered / scattered
        self.save_dir = save_dir
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.keep_last = keep_last

    # ---- paths ----
    def _path(self, name: str) -> str:
        return os.path.join(self.save_dir, name if name.endswith(".pth") else f"{name}.pth")

    def has_checkpoint(self) -> bool:
        """True when ``last_checkpoint`` exists in ``save_dir``."""
        return os.path.isfile(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def get_checkpoint_file(self) -> str:
        """Path of the checkpoint ``last_checkpoint`` names."""
        with open(os.path.join(self.save_dir, LAST_CHECKPOINT)) as f:
            name = f.read().strip()
        return os.path.join(self.save_dir, name)

    def periodic_checkpoints(self) -> list[str]:
        """Paths of ``model_<iter>.pth`` files in ``save_dir``, oldest first."""
        found = []
        for p in glob.glob(os.path.join(self.save_dir, "model_*.pth")):
            m = _PERIODIC.match(os.path.basename(p))
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files a killed save left behind (main process only)."""
        if comm.is_main_process():
            for p in glob.glob(os.path.join(self.save_dir, f"{_TMP_PREFIX}*")):
                try:
                    os.unlink(p)
                except OSError:
                    pass

    # ---- save ----
    def state_dict(self, iteration: int) -> dict[str, Any]:
        """Model, optimizer, scheduler and scaler states (what ``save`` writes, minus RNG);
        collective for a sharded model (rank 0 gets the full states)."""
        out: dict[str, Any] = {"format": 1, "iteration": int(iteration),
                               "model": self.model_state()}
        for key in ("optimizer", "scheduler", "scaler"):
            obj = getattr(self, key)
            if obj is None:
                continue
            if key == "optimizer" and self.sharded:
                out[key] = fsdp.full_optimizer_state(self.model, obj)
            else:
                out[key] = obj.state_dict()
        return out

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's full state dict (collective for a sharded model; its rank 0 holds it)."""
        return fsdp.full_model_state(self.model) if self.sharded else self.model.state_dict()

    def save(
        self,
        name: str,
        iteration: int,
        extra: dict[str, Any] | None = None,
        data_position: dict[str, Any] | None = None,
    ) -> str | None:
        """Write checkpoint ``name`` atomically, then point ``last_checkpoint`` at it.

        ``iteration`` counts completed iterations (a resumed run continues from it);
        ``data_position`` (default ``{"iteration": iteration}``) tells the loader where to go on.
        Returns the path written (``None`` on ranks other than 0).
        """
        rng = comm.all_gather_object(get_rng_state())
        # Gathering a sharded model's states is collective: every rank takes part.
        ckpt = self.state_dict(iteration) if self.sharded or comm.is_main_process() else None
        if not comm.is_main_process():
            comm.synchronize()
            return None
        os.makedirs(self.save_dir, exist_ok=True)
        ckpt["rng"] = rng
        ckpt["data_position"] = dict(data_position or {"iteration": int(iteration)})
        ckpt["extra"] = dict(extra or {})
        path = self._path(name)
        atomic_write(path, lambda f: torch.save(ckpt, f))
        base = os.path.basename(path)
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT),
                     lambda f: f.write(base.encode() + b"\n"))
        logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
        self._prune(keep=path)
        comm.synchronize()
        return path

    def _prune(self, keep: str) -> None:
        if self.keep_last <= 0:
            return
        periodic = self.periodic_checkpoints()
        for p in periodic[: max(0, len(periodic) - self.keep_last)]:
            if os.path.abspath(p) != os.path.abspath(keep):
                try:
                    os.unlink(p)
                except OSError:
                    pass

    # ---- load ----
    def load(self, path: str, restore_rng: bool = True) -> dict[str, Any]:
        """Restore everything ``path`` holds; returns the checkpoint dict (tensors on the CPU)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"Cannot read checkpoint {path} ({type(e).__name__}: {e})") from None
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError(f"{path} is not a training checkpoint (no 'model' entry).")
        if self.sharded:  # every rank read the full state; each keeps its shard
            fsdp.load_full_model_state(self.model, ckpt["model"])
        else:
            load_state_into(self.model, ckpt["model"], source=path, strict=True)
        for key in ("optimizer", "scheduler", "scaler"):
            obj = getattr(self, key)
            if obj is not None and key in ckpt:
                if key == "optimizer" and self.sharded:
                    fsdp.load_full_optimizer_state(self.model, obj, ckpt[key])
                else:
                    obj.load_state_dict(ckpt[key])
            elif obj is not None:
                logger.warning("Checkpoint %s has no %s state; starting it fresh.", path, key)
        if restore_rng and ckpt.get("rng"):
            states = ckpt["rng"]
            rank, world = comm.get_rank(), comm.get_world_size()
            if len(states) != world:
                logger.warning("Checkpoint saved by %d process(es), resumed with %d: RNG streams "
                               "differ from an uninterrupted run.", len(states), world)
            set_rng_state(states[rank % len(states)])
        logger.info("Resumed from %s (iteration %d)", path, int(ckpt.get("iteration", 0)))
        return ckpt

    def resume_or_load(self, path: str, resume: bool = True,
                       parts: dict[str, tuple[str, str]] | None = None) -> int:
        """With ``resume`` and a ``last_checkpoint``: restore it all and return its iteration.

        Otherwise load model weights from ``path`` (when non-empty; missing/unexpected keys are
        logged, shape mismatches raise), then for each ``prefix -> (file, config key)`` of
        ``parts`` with a file, replace the tensors under ``prefix`` with that file's (e.g.
        ``{"mask_generator.": (F, "MODEL.GENERATOR_WEIGHTS")}`` swaps in the generator of another
        run; errors name the key), and return 0.
        """
        if resume and self.has_checkpoint():
            ckpt = self.load(self.get_checkpoint_file())
            self.loaded = ckpt
            return int(ckpt.get("iteration", 0))
        self.loaded = None
        if path and self.sharded:
            from mmmask.utils.weights import load_state_dict_file

            fsdp.load_full_model_state(self.model, load_state_dict_file(path), strict=False)
        elif path:
            load_model_weights(self.model, path, strict=False)
        for prefix, (part_path, key) in (parts or {}).items():
            if part_path:
                self._load_part(prefix, part_path, key)
        return 0

    def _load_part(self, prefix: str, path: str, key: str) -> None:
        if not self.sharded:
            load_model_part(self.model, prefix, path, key, strict=False)
            return
        _, state = _part_state(self.model, prefix, path, key)
        fsdp.load_full_model_state(self.model, state, strict=False)
        logger.info("Loaded %d %s* tensors from %s", len(state), prefix, path)


def _part_state(model: nn.Module, prefix: str, path: str,
                key: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``model``'s submodule ``prefix`` and the ``prefix*`` tensors of ``path`` (full names);
    a model without that submodule or a file without those tensors raises, naming ``key``."""
    from mmmask.utils.weights import load_state_dict_file, resolve_weights

    source = resolve_weights(path)
    state = {k: v for k, v in load_state_dict_file(path, config_key=key).items()
             if k.startswith(prefix)}
    try:
        part = unwrap_model(model).get_submodule(prefix.rstrip("."))
    except AttributeError:
        raise ValueError(f"The model has no {prefix.rstrip('.')!r} to load {source} into "
                         f"({key})") from None
    if not state:
        raise ValueError(f"{source} holds no {prefix}* tensors ({key})")
    return part, state


def load_model_part(model: nn.Module, prefix: str, path: str, key: str,
                    strict: bool = False) -> LoadResult:
    """Replace the tensors of ``model``'s submodule ``prefix`` (e.g. ``"mask_generator."``) with
    the ``prefix*`` tensors of ``path``, the file named by config key ``key`` (errors name it).

    Shapes are always checked; with ``strict`` missing or unknown tensors raise too (another
    architecture), otherwise they are logged.
    """
    from mmmask.utils.weights import resolve_weights

    part, state = _part_state(model, prefix, path, key)
    try:
        result = load_state_into(part, {k[len(prefix):]: v for k, v in state.items()},
                                 source=resolve_weights(path), strict=strict)
    except ValueError as e:
        raise ValueError(f"{e} ({key})") from None
    logger.info("Loaded %d %s* tensors from %s", len(state), prefix, path)
    return result
