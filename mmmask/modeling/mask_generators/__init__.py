"""Mask generators: a registered module turns backbone features (and, for PMP, the vocabulary's
text embeddings) into :class:`MaskProposals`.

Importing this package registers ``"PMP"`` and ``"SAM"`` in ``MASK_GENERATOR_REGISTRY``.
"""

from .pixel_decoder import FPNPixelDecoder, sine_position_encoding
from .pmp import PMPMaskGenerator, pad_target_masks
from .proposals import MaskProposals
from .query_decoder import QueryDecoder
from .sam import SAMMaskGenerator
from .sam_train import SAMTrainer  # noqa: F401  (registers "SAMTrainer" in META_ARCH_REGISTRY)

__all__ = [
    "FPNPixelDecoder",
    "MaskProposals",
    "PMPMaskGenerator",
    "QueryDecoder",
    "SAMMaskGenerator",
    "pad_target_masks",
    "sine_position_encoding",
]
