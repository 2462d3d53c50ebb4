"""CLIP over open_clip: model creation, the frozen backbone, the text classifier, pretraining,
region self-distillation."""

from .backbone import CLIPBackbone
from .distill import CLIPDenseDistiller, grid_boxes
from .models import create_clip, list_clip_models
from .pretrain import CLIPPretrainer
from .text import PROMPT_TEMPLATES, TextEncoder, TextTower, encode_text_tokens, synonym_index

__all__ = ["CLIPBackbone", "CLIPDenseDistiller", "grid_boxes", "create_clip", "list_clip_models",
           "PROMPT_TEMPLATES", "TextEncoder", "TextTower", "encode_text_tokens", "synonym_index"]
