"""Building SAM models from the ``segment_anything`` building blocks, and loading checkpoints.

``SAM_VARIANTS`` maps an official variant name to its four image-encoder numbers (as
``segment_anything.sam_model_registry`` does); ``"custom"`` takes them from the arguments, so a tiny
SAM (image 128-256 px, depth 2, width 96) builds and trains on a CPU.

Checkpoints are local files only: an official ``.pth`` (loaded with ``weights_only=True``) or a
``.safetensors`` state dict. A checkpoint made for another variant is refused with a message naming
the variant it looks like.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn

__all__ = [
    "SamVariant",
    "SAM_VARIANTS",
    "build_sam_model",
    "load_sam_checkpoint",
    "read_state_dict",
    "describe_sam_state_dict",
    "sam_kwargs_from_cfg",
]

CHECKPOINT_KEY = "MODEL.SAM.CHECKPOINT"


@dataclass(frozen=True)
class SamVariant:
    """The image-encoder numbers of one SAM variant."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]


# Official SAM image encoders (image 1024 px, patch 16, prompt dim 256 for all three).
SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamVariant(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamVariant(1280, 32, 16, (7, 15, 23, 31)),
}
VALID_VARIANTS = (*SAM_VARIANTS, "custom")


def _resolve_variant(
    variant: str,
    encoder_embed_dim: int | None,
    encoder_depth: int | None,
    encoder_num_heads: int | None,
    encoder_global_attn_indexes: Sequence[int] | None,
) -> SamVariant:
    if variant in SAM_VARIANTS:
        return SAM_VARIANTS[variant]
    if variant != "custom":
        raise ValueError(
            f"Unknown SAM variant {variant!r} (MODEL.SAM.VARIANT); valid: {list(VALID_VARIANTS)}"
        )
    given = (encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_global_attn_indexes)
    if any(v is None for v in given):
        raise ValueError(
            "A 'custom' SAM needs encoder_embed_dim, encoder_depth, encoder_num_heads and "
            "encoder_global_attn_indexes (MODEL.SAM.ENCODER_*)"
        )
    indexes = tuple(int(i) for i in encoder_global_attn_indexes)  # type: ignore[union-attr]
    bad = [i for i in indexes if not 0 <= i < int(encoder_depth)]  # type: ignore[arg-type]
    if bad:
        raise ValueError(
            f"ENCODER_GLOBAL_ATTN_INDEXES {list(indexes)} has blocks {bad} outside "
            f"0..{int(encoder_depth) - 1} (ENCODER_DEPTH={encoder_depth})"  # type: ignore[arg-type]
        )
    return SamVariant(
        int(encoder_embed_dim), int(encoder_depth), int(encoder_num_heads), indexes  # type: ignore
    )


def build_sam_model(
    variant: str = "custom",
    checkpoint: str = "",
    *,
    image_size: int = 1024,
    encoder_embed_dim: int | None = None,
    encoder_depth: int | None = None,
    encoder_num_heads: int | None = None,
    encoder_global_attn_indexes: Sequence[int] | None = None,
    patch_size: int = 16,
    prompt_embed_dim: int = 256,
    window_size: int = 14,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
) -> Sam:
    """Build a ``segment_anything`` ``Sam`` (eval mode) and optionally load a local checkpoint.

    Args:
        variant: "vit_b" | "vit_l" | "vit_h" (encoder numbers from ``SAM_VARIANTS``; the
            ``encoder_*`` arguments are ignored) or "custom" (they are required).
        checkpoint: local ``.pth`` / ``.safetensors`` file; "" = random init.
        image_size: side of the square encoder input (official 1024); the image embedding is
            ``image_size // patch_size`` on a side and low-res mask logits 4x that.
        prompt_embed_dim: channels of the image embedding, prompts and decoder (official 256).
        window_size, decoder_mlp_dim, decoder_num_heads: official 14, 2048, 8.
    """
    if image_size % patch_size != 0:
        raise ValueError(
            f"MODEL.SAM.IMAGE_SIZE ({image_size}) must be a multiple of PATCH_SIZE ({patch_size})"
        )
    if prompt_embed_dim % 8 != 0 or prompt_embed_dim % decoder_num_heads != 0:
        raise ValueError(
            f"PROMPT_EMBED_DIM ({prompt_embed_dim}) must be a multiple of 8 and of "
            f"DECODER_NUM_HEADS ({decoder_num_heads})"
        )
    spec = _resolve_variant(
        variant, encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_global_attn_indexes
    )
    if spec.encoder_embed_dim % spec.encoder_num_heads != 0:
        raise ValueError(
            f"ENCODER_EMBED_DIM ({spec.encoder_embed_dim}) must be a multiple of "
            f"ENCODER_NUM_HEADS ({spec.encoder_num_heads})"
        )
    grid = image_size // patch_size  # side of the image embedding
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=prompt_embed_dim,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_num_heads,
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    sam.eval()
    if checkpoint:
        load_sam_checkpoint(sam, checkpoint, variant=variant)
    return sam


def sam_kwargs_from_cfg(cfg) -> dict:
    """Keyword arguments of :func:`build_sam_model` from ``cfg.MODEL.SAM``."""
    c = cfg.MODEL.SAM
    custom = c.VARIANT == "custom"
    return {
        "variant": c.VARIANT,
        "checkpoint": c.CHECKPOINT,
        "image_size": c.IMAGE_SIZE,
        "encoder_embed_dim": c.ENCODER_EMBED_DIM if custom else None,
        "encoder_depth": c.ENCODER_DEPTH if custom else None,
        "encoder_num_heads": c.ENCODER_NUM_HEADS if custom else None,
        "encoder_global_attn_indexes": list(c.ENCODER_GLOBAL_ATTN_INDEXES) if custom else None,
        "patch_size": c.PATCH_SIZE,
        "prompt_embed_dim": c.PROMPT_EMBED_DIM,
        "window_size": c.WINDOW_SIZE,
        "decoder_mlp_dim": c.DECODER_MLP_DIM,
        "decoder_num_heads": c.DECODER_NUM_HEADS,
    }


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` or ``.pth`` file (``weights_only=True``), on the CPU.

    A wrapped dict (``{"model": ...}`` or ``{"state_dict": ...}``) is unwrapped, and a prefix in
    front of ``image_encoder.`` (``sam.``, ``mask_generator.sam.``) is stripped.
    """
    from mmmask.utils.weights import resolve_weights

    path = resolve_weights(path)  # "shipped:<file>" -> the package's weights folder
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SAM checkpoint {path!r} is not a local file. Download an official SAM checkpoint "
            f"(e.g. sam_vit_b_01ec64.pth) on a connected machine and set {CHECKPOINT_KEY} to "
            "its path, or set it to '' for random init."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{CHECKPOINT_KEY}={path!r} does not hold a state dict")
    prefixes = {k[: k.index("image_encoder.")] for k in state if "image_encoder." in k}
    if len(prefixes) == 1 and (prefix := prefixes.pop()):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def describe_sam_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Which SAM the tensors look like: ``"vit_b (embed 768, depth 12, image 1024, patch 16)"``."""
    pos = state.get("image_encoder.pos_embed")
    patch = state.get("image_encoder.patch_embed.proj.weight")
    blocks = [
        int(m.group(1))
        for k in state
        if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)) is not None
    ]
    if pos is None and patch is None:
        return "not a SAM checkpoint (no image_encoder.pos_embed / patch_embed)"
    embed = int(pos.shape[-1]) if pos is not None else int(patch.shape[0])  # type: ignore
    depth = max(blocks) + 1 if blocks else 0
    parts = [f"embed {embed}", f"depth {depth}"]
    if patch is not None:
        p = int(patch.shape[-1])
        parts.append(f"patch {p}")
        if pos is not None:
            parts.insert(2, f"image {int(pos.shape[1]) * p}")
    official = {(v.encoder_embed_dim, v.encoder_depth): n for n, v in SAM_VARIANTS.items()}
    name = official.get((embed, depth), "custom")
    return f"{name} ({', '.join(parts)})"


def load_sam_checkpoint(sam: Sam, path: str, *, variant: str = "custom") -> None:
    """Load a local checkpoint into ``sam``; a checkpoint of another shape is a ``ValueError``."""
    state = read_state_dict(path)
    own = sam.state_dict()
    mismatched = [
        k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        detail = (
            f"{len(mismatched)} tensors of another shape (e.g. {mismatched[:3]}), "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
        raise ValueError(
            f"{CHECKPOINT_KEY}={path!r} looks like SAM {describe_sam_state_dict(state)}, but the "
            f"configured model is SAM {variant} ({describe_sam_state_dict(own)}): {detail}. "
            "Set MODEL.SAM.VARIANT (and IMAGE_SIZE / ENCODER_* for 'custom') to match."
        )
    sam.load_state_dict(state)
