"""Models. Importing this package registers every backbone, mask generator, mask classifier and
meta-architecture of mmmask in :mod:`mmmask.registry`."""

from . import clip, mask_adapter, mask_crop, mask_generators, mask_pooling, meta_arch  # noqa: F401
from .clip import CLIPBackbone, CLIPPretrainer
from .meta_arch import OpenVocabSegmentor

__all__ = ["CLIPBackbone", "CLIPPretrainer", "OpenVocabSegmentor", "build_model"]


def build_model(cfg):
    """``META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)`` with every family registered."""
    import mmmask.cm3  # noqa: F401  (generative meta-architectures)
    from mmmask.registry import META_ARCH_REGISTRY

    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
