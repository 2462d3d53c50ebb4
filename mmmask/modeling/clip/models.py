"""Creating open_clip models from a name and a weight source (open_clip tag or local file).

Architectures are open_clip JSON configs: the built-in ones of open_clip plus those shipped in
``mmmask/model_configs/`` (tiny Shapes-OV CLIPs), registered with open_clip on import. Weights are
separate: an open_clip pretrained tag (downloaded by open_clip on a connected machine) or a local
``.safetensors`` / ``.pt`` / ``.bin`` state dict.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import open_clip
import timm
import torch
from timm.models import register_model
from timm.models.convnext import ConvNeXt

from mmmask.utils.weights import load_state_dict_file

__all__ = ["create_clip", "list_clip_models", "MODEL_CONFIG_DIR", "OPENAI_MEAN", "OPENAI_STD"]

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[2] / "model_configs"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# The keys of a whole segmentor's weights that hold its CLIP: ``MODEL.CLIP.PRETRAINED`` may name
# such a file (a trained model's frozen CLIP, to train another generator on).
SEGMENTOR_CLIP_PREFIX = "backbone.clip."


if "mmmask_convnext_pico" not in timm.list_models("mmmask_*"):

    @register_model
    def mmmask_convnext_pico(pretrained: bool = False, **kwargs) -> ConvNeXt:
        """A 1.2 M-parameter ConvNeXt for the Shapes-OV CLIP; output stride 16 (the last stage is
        dilated) so that the dense map stays fine on small images."""
        if pretrained:
            raise ValueError("mmmask_convnext_pico has no timm weights; train it with mmmask.")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
        args = dict(depths=(1, 1, 3, 1), dims=(32, 64, 128, 256), ls_init_value=None,
                    output_stride=16)
        model = ConvNeXt(**dict(args, **kwargs))
        model.pretrained_cfg = model.default_cfg = {"architecture": "mmmask_convnext_pico"}
        return model


open_clip.add_model_config(MODEL_CONFIG_DIR)


def list_clip_models() -> list[str]:
    """Every architecture name open_clip knows, the shipped ones included."""
    return open_clip.list_models()


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns that a model built without a tag is "initialized randomly"; mmmask loads
    its weights right after (a local file, or MODEL.WEIGHTS), so that warning only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")


def _create_untrained(model_name: str):
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        return open_clip.create_model(model_name, pretrained=None)
    finally:
        root.removeFilter(drop)


def _is_local_file(pretrained: str) -> bool:
    return os.path.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin"))


def create_clip(model_name: str, pretrained: str = "", config_key: str = "MODEL.CLIP.PRETRAINED"):
    """Build ``model_name`` and load ``pretrained`` (tag, local file or "" for random init).

    Returns ``(model, mean, std)`` with mean/std in the 0-1 range, the preprocessing of the
    weights. A tag that cannot be downloaded fails with a message naming ``config_key``.
    """
    if model_name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise KeyError(
            f"Unknown CLIP model {model_name!r} (MODEL.CLIP.MODEL_NAME). Closest: {close}; "
            f"shipped: {sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))}; "
            "open_clip.list_models() lists all."
        )
    mean, std = OPENAI_MEAN, OPENAI_STD
    if not pretrained:
        model = _create_untrained(model_name)
    elif _is_local_file(pretrained):
        model = _create_untrained(model_name)
        state = load_state_dict_file(pretrained, config_key=config_key)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if state and all(k.startswith("clip.") for k in state):  # a CLIPPretrainer export
            state = {k.removeprefix("clip."): v for k, v in state.items()}
        elif any(k.startswith(SEGMENTOR_CLIP_PREFIX) for k in state):  # a segmentor's weights
            state = {k.removeprefix(SEGMENTOR_CLIP_PREFIX): v for k, v in state.items()
                     if k.startswith(SEGMENTOR_CLIP_PREFIX)}
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        from mmmask.utils.weights import load_matching

        load_matching(model, state, source=pretrained, strict=True)
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise KeyError(
                f"Unknown open_clip tag {pretrained!r} for {model_name} ({config_key}); "
                f"valid tags: {tags or 'none'}; or set {config_key} to a local weight file."
            )
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained)
        except Exception as e:  # network errors come in many types
            raise RuntimeError(
                f"Could not fetch open_clip weights {model_name}/{pretrained} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''}). Without network, download "
                f"them elsewhere and set {config_key} to the local file path."
            ) from None
        pcfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        mean, std = tuple(pcfg.get("mean", mean)), tuple(pcfg.get("std", std))
    model.eval()
    return model, mean, std


def tokenizer_for(model_name: str):
    """open_clip's tokenizer for ``model_name`` (the CLIP BPE one ships inside open_clip)."""
    return open_clip.get_tokenizer(model_name)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
