"""Causal-masked multimodal generation (CM3): VQ image tokenizer, CM3 transform, decoder, sampling.

Importing ``mmmask.cm3`` registers (documented in each module):

- META_ARCH_REGISTRY / GENERATIVE_MODEL_REGISTRY: ``VQTokenizer`` (:mod:`.vq`) and ``CM3``
  (:mod:`.meta_arch`, a :class:`CM3DocumentModel`);
- DATA_MAPPER_REGISTRY: ``CM3DocumentMapper`` (:mod:`.data`);
- DATASET_REGISTRY: ``cm3_documents``, which registers the catalog names ``shapes_ov_documents``
  and ``shapes_ov_documents_val`` (called at import).
"""

from .api import CM3Generator
from .data import CM3DocumentMapper, cm3_documents
from .documents import build_document, caption_prompt, parse_document, text_to_image_prompt
from .generate import IncrementalDecoder, cfg_logits, generate, generate_reference, sample_next
from .masking import apply_spans, cm3_mask, cm3_unmask, sample_spans
from .meta_arch import CM3DocumentModel
from .model import CM3, CM3Config, KVCache
from .regions import box_to_mask, cells_to_spans, mask_to_cells
from .tokenizer import Vocab
from .vq import VQTokenizer, code_perplexity, codebook_usage, psnr
from .webdataset import iter_image_text, list_image_text_records, register_webdataset

__all__ = [
    "CM3Generator", "CM3DocumentMapper", "cm3_documents", "build_document", "caption_prompt",
    "parse_document", "text_to_image_prompt", "IncrementalDecoder", "cfg_logits", "generate",
    "generate_reference", "sample_next", "apply_spans", "cm3_mask", "cm3_unmask", "sample_spans",
    "CM3DocumentModel", "CM3", "CM3Config", "KVCache", "box_to_mask", "cells_to_spans",
    "mask_to_cells", "Vocab", "VQTokenizer", "code_perplexity", "codebook_usage", "psnr",
    "iter_image_text", "list_image_text_records", "register_webdataset",
]
