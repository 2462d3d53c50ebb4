"""Evaluator base classes and the inference loop.

An evaluator accumulates per-image statistics in ``process(inputs, outputs)`` and turns them into
metrics in ``evaluate()``. Its accumulated statistics are a picklable ``state()``; ``merge(states)``
adds other states to it, so statistics gathered by several processes (or several evaluators fed
disjoint parts of a dataset) combine exactly. With ``torch.distributed`` initialised,
``evaluate()`` gathers every rank's state with ``all_gather_object``; rank 0 returns the metrics,
the other ranks return ``{}``.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "gather_states",
    "is_main_process",
    "to_numpy",
    "dataset_metadata",
    "meta_get",
]

logger = logging.getLogger(__name__)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def is_main_process() -> bool:
    """True without ``torch.distributed`` or on rank 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def gather_states(state: Any) -> list[Any]:
    """Every rank's ``state`` (rank order); ``[state]`` when not distributed."""
    if _world_size() == 1:
        return [state]
    states: list[Any] = [None] * _world_size()
    torch.distributed.all_gather_object(states, state)
    return states


class DatasetEvaluator:
    """Base class: ``reset()``, ``process(inputs, outputs)``, ``evaluate() -> dict``.

    Subclasses implement ``reset``, ``process``, ``state``, ``merge`` and ``compute`` (metrics from
    the statistics accumulated in this process). ``evaluate`` gathers across processes first.
    """

    #: Key of this evaluator's results inside :class:`DatasetEvaluators`.
    name: str = "evaluator"

    def reset(self) -> None:
        """Forget every statistic accumulated so far (called before a new evaluation)."""

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        """Accumulate statistics of one batch: ``inputs[i]`` is the model input of image ``i``
        and ``outputs[i]`` the model's output for it."""

    def state(self) -> Any:
        """The accumulated statistics, picklable (numpy arrays, lists, numbers)."""
        raise NotImplementedError

    def merge(self, states: Sequence[Any]) -> None:
        """Add the statistics of ``states`` (each from ``state()``) to this evaluator's."""
        raise NotImplementedError

    def compute(self) -> dict:
        """Metrics from the statistics held by this evaluator (no cross-process gathering)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Metrics over everything processed by every rank; ``{}`` on ranks other than 0."""
        if _world_size() > 1:
            states = gather_states(self.state())
            if not is_main_process():
                return {}
            self.reset()
            self.merge(states)
        return self.compute()


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run together; results are ``{evaluator.name: metrics}``."""

    name = "evaluators"

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        self.evaluators = list(evaluators)
        names = [e.name for e in self.evaluators]
        if len(set(names)) != len(names):
            raise ValueError(f"Evaluators must have distinct names; got {names}.")

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for e in self.evaluators:
            e.process(inputs, outputs)

    def state(self) -> list:
        return [e.state() for e in self.evaluators]

    def merge(self, states: Sequence[Any]) -> None:
        for i, e in enumerate(self.evaluators):
            e.merge([s[i] for s in states])

    def compute(self) -> dict:
        return {e.name: e.compute() for e in self.evaluators}

    def evaluate(self) -> dict:
        results = {}
        for e in self.evaluators:
            res = e.evaluate()
            if is_main_process():
                results[e.name] = res
        return results


@contextmanager
def _eval_mode(model: Any):
    """Put an ``nn.Module`` in eval mode for the block, restoring its training flag after."""
    if isinstance(model, torch.nn.Module):
        training = model.training
        model.eval()
        try:
            yield
        finally:
            model.train(training)
    else:
        yield


def inference_on_dataset(
    model: Callable[[list[dict]], list[dict]],
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
    *,
    progress: bool = True,
) -> dict:
    """Run ``model`` over ``data_loader`` in eval mode without gradients and evaluate.

    Args:
        model: an ``nn.Module`` (put in eval mode for the run, its mode restored after) or any
            callable taking a batch (list of model-input dicts) and returning one output dict per
            image.
        data_loader: iterable of batches (lists of model-input dicts).
        evaluator: one evaluator, a list of them (combined with :class:`DatasetEvaluators`) or
            None (inference only).
        progress: show a tqdm progress bar (on the main process).

    Returns:
        ``evaluator.evaluate()`` (``{}`` on ranks other than 0, and when ``evaluator`` is None).
    """
    from tqdm import tqdm

    if evaluator is not None and not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    if evaluator is not None:
        evaluator.reset()
    try:
        total = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    bar = tqdm(data_loader, total=total, desc="inference", disable=not (progress and
               is_main_process()), dynamic_ncols=True)
    with ExitStack() as stack:
        stack.enter_context(_eval_mode(model))
        stack.enter_context(torch.no_grad())
        for batch in bar:
            outputs = model(batch)
            if len(outputs) != len(batch):
                raise ValueError(
                    f"The model returned {len(outputs)} outputs for a batch of {len(batch)} images."
                )
            if evaluator is not None:
                evaluator.process(batch, outputs)
    bar.close()
    if evaluator is None:
        return {}
    return evaluator.evaluate()


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a tensor (any device) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def meta_get(meta: Any, key: str, default: Any = None) -> Any:
    """``meta.key`` for metadata objects, ``meta[key]`` for dicts; ``default`` when absent."""
    if meta is None:
        return default
    if isinstance(meta, dict):
        return meta.get(key, default)
    return getattr(meta, key, default)


def dataset_metadata(dataset_name: str | None, metadata: Any = None) -> Any:
    """``metadata`` when given, else ``MetadataCatalog.get(dataset_name)``."""
    if metadata is not None:
        return metadata
    if dataset_name is None:
        raise ValueError("Give a dataset name registered in the catalog or its metadata.")
    from mmmask.data.catalog import MetadataCatalog

    return MetadataCatalog.get(dataset_name)


def check_class_lists(num_classes: int, **lists) -> None:
    """``ValueError`` unless ``num_classes > 0`` and every given per-class list has that length."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive; got {num_classes}.")
    for key, val in lists.items():
        if val is not None and len(val) != num_classes:
            raise ValueError(f"{key} has {len(val)} entries for {num_classes} classes.")
