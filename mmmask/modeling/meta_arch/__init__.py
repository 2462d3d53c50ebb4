"""Meta-architectures: whole models composed from registered parts."""

from .open_vocab import OpenVocabSegmentor, default_vocabulary

__all__ = ["OpenVocabSegmentor", "default_vocabulary"]
