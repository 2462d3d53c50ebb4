"""The registries of mmmask.

Every pluggable family is one :class:`fvcore.common.registry.Registry`. A new component is one
decorated class (or function) plus a config name; builders look the name up with
``REGISTRY.get(name)`` and never dispatch on strings by hand.

Call contract of each registry (what ``REGISTRY.get(name)`` returns and how it is called):

- ``BACKBONE_REGISTRY``: ``cls(cfg) -> nn.Module`` with ``forward(images) -> dict[str, Tensor]``.
- ``MASK_GENERATOR_REGISTRY``: ``cls(cfg) -> nn.Module`` producing mask proposals.
- ``MASK_CLASSIFIER_REGISTRY``: ``cls(cfg) -> nn.Module`` naming masks against text embeddings.
- ``META_ARCH_REGISTRY``: ``cls(cfg) -> nn.Module``; the whole trainable model of a config.
- ``GENERATIVE_MODEL_REGISTRY``: ``cls(cfg) -> nn.Module`` (VQ tokenizer, CM3 decoder).
- ``DATASET_REGISTRY``: ``fn(cfg=None) -> None`` registering datasets in the catalog.
- ``EVALUATOR_REGISTRY``: ``cls(dataset_name, cfg=None, **kw) -> DatasetEvaluator``.
- ``DATA_MAPPER_REGISTRY``: ``cls(cfg, is_train: bool)``; called on a catalog record, returns the
  model's input dict for one image (``INPUT.DATASET_MAPPER`` names it).
"""

from __future__ import annotations

import difflib

from fvcore.common.registry import Registry

__all__ = [
    "BACKBONE_REGISTRY",
    "MASK_GENERATOR_REGISTRY",
    "MASK_CLASSIFIER_REGISTRY",
    "META_ARCH_REGISTRY",
    "GENERATIVE_MODEL_REGISTRY",
    "DATASET_REGISTRY",
    "EVALUATOR_REGISTRY",
    "DATA_MAPPER_REGISTRY",
    "lookup",
]


class _Registry(Registry):
    """fvcore Registry whose unknown-name error lists the valid names and the closest one."""

    def get(self, name: str):
        ret = self._obj_map.get(name)
        if ret is None:
            names = sorted(self._obj_map)
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(
                f"No object named {name!r} in the {self._name} registry.{hint} "
                f"Valid names: {', '.join(names) or '(none registered)'}"
            )
        return ret

    def names(self) -> list[str]:
        return sorted(self._obj_map)


BACKBONE_REGISTRY = _Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Backbones: cls(cfg) -> nn.Module returning a dict of feature maps."
MASK_GENERATOR_REGISTRY = _Registry("MASK_GENERATOR")
MASK_GENERATOR_REGISTRY.__doc__ = "Mask generators (PMP, SAM): cls(cfg) -> nn.Module."
MASK_CLASSIFIER_REGISTRY = _Registry("MASK_CLASSIFIER")
MASK_CLASSIFIER_REGISTRY.__doc__ = "Mask classifiers (MaskAdapter, MaskPooling): cls(cfg)."
META_ARCH_REGISTRY = _Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = "Meta-architectures: cls(cfg) -> the whole model of a config."
GENERATIVE_MODEL_REGISTRY = _Registry("GENERATIVE_MODEL")
GENERATIVE_MODEL_REGISTRY.__doc__ = "Generative models (VQ tokenizer, CM3): cls(cfg)."
DATASET_REGISTRY = _Registry("DATASET")
DATASET_REGISTRY.__doc__ = "Dataset families: fn() registering names in DatasetCatalog."
EVALUATOR_REGISTRY = _Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = "Evaluators: cls(dataset_name, cfg=None, **kw) -> DatasetEvaluator."

DATA_MAPPER_REGISTRY = _Registry("DATA_MAPPER")
DATA_MAPPER_REGISTRY.__doc__ = "Dataset mappers: cls(cfg, is_train) -> callable(record) -> dict."


def lookup(registry: _Registry, name: str):
    """``registry.get(name)`` after importing every module that registers components."""
    import mmmask.modeling  # noqa: F401  (registers backbones, generators, classifiers)

    return registry.get(name)
