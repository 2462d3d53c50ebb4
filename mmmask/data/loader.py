"""Train and test data loaders: batches are plain lists of mapped dicts (per-image sizes kept).

Training is an infinite stream of global batches of ``SOLVER.IMS_PER_BATCH`` records. The stream
is a pure function of ``SEED``: epoch ``e`` visits the records in the permutation drawn from
``SEED + e``, and sample ``p`` of the stream is augmented under a torch seed derived from
``(SEED, p)``. Rank ``r`` of ``W`` processes takes slice ``r`` of every global batch, so the ranks
together see exactly the batches of a 1-process run, and ``start_iter`` resumes the stream at
iteration ``start_iter`` directly (nothing is replayed).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..registry import DATA_MAPPER_REGISTRY, DATASET_REGISTRY
from . import builtin  # noqa: F401  (registers the shapes_ov family)
from .catalog import DatasetCatalog

__all__ = [
    "build_train_loader",
    "register_datasets",
    "build_test_loader",
    "build_mapper",
    "TrainSampler",
    "TrainLoader",
    "trivial_batch_collator",
    "sample_seed",
]


def trivial_batch_collator(batch: list) -> list:
    """A batch is the list of per-image dicts, as the model takes it."""
    return batch


def sample_seed(seed: int, position: int) -> int:
    """Torch seed of stream position ``position`` (independent of rank and worker)."""
    return int(np.random.SeedSequence([int(seed), int(position)]).generate_state(1)[0])


class _ConcatRecords(Sequence):
    def __init__(self, parts: list[Sequence[dict]]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - int(self.offsets[k])]


def _records(names: Sequence[str]) -> Sequence[dict]:
    if not names:
        raise ValueError("No dataset given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    parts = [DatasetCatalog.get(n) for n in names]
    for n, p in zip(names, parts):
        if len(p) == 0:
            raise ValueError(f"Dataset {n!r} has no records")
    return parts[0] if len(parts) == 1 else _ConcatRecords(parts)


class TrainSampler:
    """Infinite per-rank batches of ``(record_index, stream_position)`` pairs.

    Global batch ``it`` covers stream positions ``[it * B, (it + 1) * B)``; rank ``r`` takes
    ``B / W`` consecutive positions of it. Position ``p`` is record ``perm_e[p % N]`` with
    ``e = p // N`` and ``perm_e`` the permutation drawn from ``seed + e``.
    """

    def __init__(self, num_records: int, global_batch: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0) -> None:
        if num_records <= 0:
            raise ValueError("TrainSampler needs at least one record")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if global_batch < 1 or global_batch % world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={global_batch} must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.num_records, self.global_batch = num_records, global_batch
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.start_iter = start_iter
        self.local_batch = global_batch // world_size
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng(self.seed + epoch)
            self._perms[epoch] = rng.permutation(self.num_records)
        return self._perms[epoch]

    def index_at(self, position: int) -> int:
        """Record index at stream position ``position``."""
        epoch, offset = divmod(position, self.num_records)
        return int(self._perm(epoch)[offset])

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's ``(record_index, position)`` pairs of global batch ``iteration``."""
        first = iteration * self.global_batch + self.rank * self.local_batch
        return [(self.index_at(p), p) for p in range(first, first + self.local_batch)]

    def __iter__(self):
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1


class _MappedDataset(Dataset):
    """``dataset[(index, position)]`` maps record ``index`` under the seed of ``position``."""

    def __init__(self, records: Sequence[dict], mapper: Callable[[dict], dict],
                 seed: int) -> None:
        self.records, self.mapper, self.seed = records, mapper, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key) -> dict:
        if isinstance(key, tuple):
            index, position = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, position))
                return self.mapper(self.records[index])
        return self.mapper(self.records[int(key)])


class TrainLoader:
    """Iterator of per-rank training batches (lists of mapped dicts); infinite."""

    def __init__(self, loader: DataLoader, sampler: TrainSampler) -> None:
        self.loader, self.sampler = loader, sampler
        self._it = None

    @property
    def start_iter(self) -> int:
        return self.sampler.start_iter

    def __iter__(self) -> "TrainLoader":
        return self

    def __next__(self) -> list[dict]:
        if self._it is None:
            self._it = iter(self.loader)
        return next(self._it)


def build_mapper(cfg, is_train: bool, dataset_name: str | None = None) -> Callable[[dict], dict]:
    """``DATA_MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER)(cfg, is_train)`` (with the dataset
    name when the mapper's ``from_config`` takes one)."""
    cls = DATA_MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER)
    from_config = getattr(cls, "from_config", None)
    if dataset_name and from_config is not None and (
            "dataset_name" in inspect.signature(from_config).parameters):
        return cls(cfg, is_train, dataset_name=dataset_name)
    return cls(cfg, is_train)


def _seed(cfg, world_size: int) -> int:
    seed = int(cfg.SEED)
    if seed >= 0:
        return seed
    if world_size > 1:
        raise ValueError("SEED must be >= 0 when training with several processes")
    return int(np.random.SeedSequence().generate_state(1)[0] >> 1)


def _loader_kwargs(num_workers: int) -> dict[str, Any]:
    if num_workers < 0:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, got {num_workers}")
    kw: dict[str, Any] = {"num_workers": num_workers, "collate_fn": trivial_batch_collator}
    if num_workers > 0:
        kw["persistent_workers"] = True
    return kw


def register_datasets(cfg) -> None:
    """(Re-)register every DATASET_REGISTRY family (Shapes-OV with ``DATASETS.ROOTS``, the CM3
    documents when ``mmmask.cm3`` is imported, ...) with the sizes and options of ``cfg``."""
    for name in DATASET_REGISTRY.names():
        DATASET_REGISTRY.get(name)(cfg)


def build_train_loader(cfg, rank: int = 0, world_size: int = 1, start_iter: int = 0, *,
                       mapper: Callable[[dict], dict] | None = None,
                       dataset_names: Sequence[str] | None = None) -> TrainLoader:
    """Infinite iterator of this rank's batches for ``cfg.DATASETS.TRAIN``.

    Each batch is a list of ``SOLVER.IMS_PER_BATCH / world_size`` mapped dicts. ``mapper``
    defaults to ``INPUT.DATASET_MAPPER`` in training mode; ``DATALOADER.NUM_WORKERS`` > 0 maps
    in worker processes (same batches).
    """
    register_datasets(cfg)
    records = _records(list(dataset_names or cfg.DATASETS.TRAIN))
    seed = _seed(cfg, world_size)
    sampler = TrainSampler(len(records), int(cfg.SOLVER.IMS_PER_BATCH), seed=seed, rank=rank,
                           world_size=world_size, start_iter=start_iter)
    mapper = mapper or build_mapper(cfg, True)
    dataset = _MappedDataset(records, mapper, seed)
    loader = DataLoader(dataset, batch_sampler=sampler,
                        **_loader_kwargs(int(cfg.DATALOADER.NUM_WORKERS)))
    return TrainLoader(loader, sampler)


class _Subset(Sequence):
    def __init__(self, records: Sequence[dict], start: int, stop: int) -> None:
        self.records, self.start, self.stop = records, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.records[self.start + i]


def build_test_loader(cfg, dataset_name: str, rank: int = 0, world_size: int = 1, *,
                      mapper: Callable[[dict], dict] | None = None) -> DataLoader:
    """Batches ``[one mapped dict]`` of ``dataset_name`` in order; rank ``r`` of ``W`` takes the
    ``r``-th contiguous shard (the shards together cover every record once)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    register_datasets(cfg)
    records = _records([dataset_name])
    n = len(records)
    shard = _Subset(records, n * rank // world_size, n * (rank + 1) // world_size)
    mapper = mapper or build_mapper(cfg, False, dataset_name)
    dataset = _MappedDataset(shard, mapper, 0)
    return DataLoader(dataset, batch_size=1, shuffle=False,
                      **_loader_kwargs(int(cfg.DATALOADER.NUM_WORKERS)))
