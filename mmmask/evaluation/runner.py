"""``evaluate_dataset``: the library side of ``tools/eval.py``.

Builds the test data, the evaluator of the task (from ``EVALUATOR_REGISTRY``) and the vocabulary,
runs inference, prints a plain-text table and writes the metrics as JSON.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from typing import Any, Iterable, Sequence

import torch

from mmmask.registry import EVALUATOR_REGISTRY

from .evaluator import inference_on_dataset, is_main_process, meta_get

__all__ = ["evaluate_dataset", "format_metrics", "jsonable", "write_json", "TASKS"]

#: Task name (``--task``, ``TEST.TASK``) -> evaluator name in ``EVALUATOR_REGISTRY``.
TASKS = {"semantic": "sem_seg", "panoptic": "panoptic", "instance": "instance"}


def _evaluator_name(task: str) -> str:
    if task in TASKS:
        return TASKS[task]
    if task in TASKS.values():
        return task
    raise ValueError(f"Unknown task {task!r}; valid tasks: {', '.join(TASKS)}.")


def _resolve_vocab(vocab: Any, meta: Any) -> Any:
    """A ``Vocabulary`` from ``vocab`` (Vocabulary, ``"a|b,c"`` text or a vocabulary file path)
    or, when None, from the dataset's classes; checks it has one class per dataset class."""
    from mmmask.data.vocab import Vocabulary, parse_vocab, read_vocab_file

    classes = meta_get(meta, "classes")
    if vocab is None:
        if classes is None:
            names = meta_get(meta, "class_names")
            if names is None:
                raise ValueError("The dataset metadata has neither 'classes' nor 'class_names'.")
            classes = names
        return Vocabulary.from_names(classes, seen=meta_get(meta, "is_seen"))
    if isinstance(vocab, str):
        vocab = read_vocab_file(vocab) if os.path.isfile(vocab) else parse_vocab(vocab)
    n = len(classes) if classes is not None else len(meta_get(meta, "class_names") or [])
    if n and len(vocab) != n:
        raise ValueError(f"The vocabulary has {len(vocab)} classes but the dataset has {n}; give "
                         "one vocabulary entry per dataset class, in the dataset's order.")
    return vocab


def _is_record(item: dict) -> bool:
    """A catalog record (to be mapped) rather than a model input."""
    return "image" not in item and ("file_name" in item or "shapes" in item)


def _batches(items: Sequence[dict], mapper: Any) -> Iterable[list[dict]]:
    """Batches of one model input each, mapping catalog records with ``mapper`` when needed."""

    class _Loader:
        def __len__(self) -> int:
            return len(items)

        def __iter__(self):
            for item in items:
                yield [mapper(item) if mapper is not None and _is_record(item) else item]

    return _Loader()


def _root_dataset_name(names: Sequence[str], task: str) -> str:
    """The registered name of a dataset root to evaluate: the task's COCO flavour when there is
    one, and the first of the splits test, val, validation, else the first registered."""
    from mmmask.data.catalog import MetadataCatalog

    suffix = {"panoptic": "_panoptic", "instance": "_instances"}.get(task)
    flavoured = [n for n in names if suffix and n.endswith(suffix)]
    plain = [n for n in names if not n.endswith(("_panoptic", "_instances"))]
    pool = flavoured or plain or list(names)
    for split in ("test", "val", "validation"):
        for n in pool:
            if MetadataCatalog.get(n).get("split") == split:
                return n
    return pool[0]


def _resolve_data(cfg: Any, dataset: Any, metadata: Any, task: str
                  ) -> tuple[str | None, Any, Any]:
    """``(dataset name, data loader, metadata)`` for a catalog name, a dataset root or a list."""
    import mmmask.data  # noqa: F401  (registers the built-in datasets and the mappers)

    if isinstance(dataset, (list, tuple)):
        if metadata is None:
            raise ValueError("Evaluating an in-memory list of inputs needs metadata=(dict or "
                             "Metadata with classes/class_names, is_thing, is_seen).")
        mapper = None
        if any(_is_record(d) for d in dataset):  # catalog records: map them
            from mmmask.data.loader import build_mapper

            mapper = build_mapper(cfg, False)
        return None, _batches(list(dataset), mapper), metadata
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a registered name, a dataset root or a list of inputs; "
                         f"got {dataset!r}.")
    from mmmask.data.catalog import DatasetCatalog, MetadataCatalog
    from mmmask.data.loader import build_test_loader

    name = dataset
    if os.path.isdir(dataset):  # user layout (classes.json, images/, annotations/) or COCO files
        from mmmask.data.readers import register_dataset_root

        name = _root_dataset_name(register_dataset_root(dataset), task)
    elif dataset not in DatasetCatalog:
        DatasetCatalog.get(dataset)  # raises KeyError listing the registered datasets
    meta = metadata if metadata is not None else MetadataCatalog.get(name)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return name, build_test_loader(cfg, name, rank, world), meta


def evaluate_dataset(
    cfg: Any,
    predictor_or_model: Any,
    dataset: str | Sequence[dict],
    task: str | None = None,
    vocab: Any = None,
    output: str | None = None,
    *,
    metadata: Any = None,
    progress: bool = True,
    show: bool = True,
) -> dict:
    """Evaluate a model on a dataset for one task and report the metrics.

    Args:
        cfg: the config (``TEST.TASK``, ``TEST.MIOU_PRESENT_ONLY``, loader settings).
        predictor_or_model: an ``nn.Module`` / callable mapping a batch (list of model inputs) to
            one output dict per image, or an object holding such a module as ``.model``.
        dataset: a catalog name, a dataset root in the user layout, or an in-memory list of model
            inputs (or catalog records, mapped with ``INPUT.DATASET_MAPPER``) with ``metadata``.
        task: "semantic", "panoptic" or "instance" (default ``cfg.TEST.TASK``).
        vocab: a ``Vocabulary``, vocabulary text (``"a|b,c"``) or file, one entry per dataset
            class; default: the dataset's classes. Given to the model's ``set_vocabulary``.
        output: path of the JSON file to write the metrics to (NaN written as null).
        metadata: dataset metadata (dict or ``Metadata``) overriding the catalog's.
        show: print the metrics table.

    Returns:
        The evaluator's metrics (``{}`` on distributed ranks other than 0).
    """
    task = task or cfg.TEST.TASK
    ev_name = _evaluator_name(task)
    name, loader, meta = _resolve_data(cfg, dataset, metadata, task)
    vocabulary = _resolve_vocab(vocab, meta)
    model = predictor_or_model
    if not callable(model) and hasattr(model, "model"):
        model = model.model
    for target in (predictor_or_model, model):
        if hasattr(target, "set_vocabulary"):
            is_thing = meta_get(meta, "is_thing")
            params = inspect.signature(target.set_vocabulary).parameters
            if is_thing is not None and "is_thing" in params:
                target.set_vocabulary(vocabulary, is_thing=list(is_thing))
            else:
                target.set_vocabulary(vocabulary)
            break
    evaluator = EVALUATOR_REGISTRY.get(ev_name)(name, cfg, metadata=meta,
                                               class_names=list(vocabulary.labels))
    results = inference_on_dataset(model, loader, evaluator, progress=progress)
    if not is_main_process():
        return {}
    if show:
        print(format_metrics(results, title=f"{task} on {name or 'in-memory dataset'}"))
    if output:
        write_json(output, results)
    return results


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temp file + rename); NaN becomes null."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(jsonable(data), f, indent=2)
    os.replace(tmp, path)


def report(result: dict, output: str | None = None) -> int:
    """Print ``result`` as JSON on stdout and write it to ``output`` (when given); returns 0, the
    exit status of the eval tools that end with it."""
    print(json.dumps(jsonable(result), indent=2))
    if output:
        write_json(output, result)
    return 0


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN / inf floats as None and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    fmt = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def format_metrics(results: dict, title: str = "") -> str:
    """Plain-text tables: the scalar metrics in one row, then one row per class."""
    parts = [title] if title else []
    scalars = {k: v for k, v in results.items() if not isinstance(v, dict)}
    if scalars:
        parts.append(_table(list(scalars), [[_fmt(v) for v in scalars.values()]]))
    per_class = results.get("per_class") or {}
    metric = "AP" if "AP" in results else "value"
    per_class = {n: v if isinstance(v, dict) or v is None else {metric: v}
                 for n, v in per_class.items()}
    keys: list[str] = []
    for v in per_class.values():
        for k in (v or {}):
            if k not in keys:
                keys.append(k)
    if per_class and keys:
        rows = [[str(n), *(_fmt(v.get(k)) for k in keys)] for n, v in per_class.items()
                if v and any(x is not None for x in v.values())]
        table = _table(["class", *keys], rows)
        if len(rows) < len(per_class):
            table += f"\n({len(per_class) - len(rows)} classes without data not shown)"
        parts.append(table)
    confusions = results.get("confusions") or {}
    if confusions:
        rows = [[v["class"], v["predicted"], str(v["pixels"]), _fmt(v["share"])]
                for v in confusions.values()]
        parts.append("most confused (pixels of a class predicted as another)\n"
                     + _table(["class", "predicted", "pixels", "% of class"], rows))
    for k, v in results.items():  # nested results of several evaluators
        if isinstance(v, dict) and k not in ("per_class", "confusions"):
            parts.append(format_metrics(v, title=str(k)))
    return "\n\n".join(parts)
