"""Converting published FC-CLIP / Mask-Adapter checkpoints into mmmask state dicts.

Supported sources (detectron2 checkpoints: ``.pth`` read with ``weights_only=True``, ``.pkl``
read by an unpickler that only builds numpy arrays, or ``.safetensors``; a ``"model"`` entry
is unwrapped):

- ``fcclip``: FC-CLIP (``backbone.clip_model.*`` open_clip CLIP, ``sem_seg_head.pixel_decoder.*``
  MSDeformAttn pixel decoder, ``sem_seg_head.predictor.*`` Mask2Former query decoder,
  ``void_embedding.weight``);
- ``mask_adapter_fcclip`` / ``mask_adapter_maftp``: Mask-Adapter on FC-CLIP or MAFT+
  (``mask_adapter.*`` head; MAFT+ adds ``cdt.*``, its content-dependent transfer).

Where the architectures correspond, keys are renamed (and reshaped where only the layout
differs; a ConvNeXt layer scale ``gamma`` is folded into the following linear layer). What has no
counterpart is reported as unused with the reason: mmmask's PMP uses a conv FPN pixel decoder
instead of MSDeformAttn and an extra text cross-attention per decoder layer; its Mask-Adapter
mask stem (2x2 stride-2 convs into the hidden width) differs from the official one (3x3 convs into
CLIP's embedding width), and the official adapter fuses CLIP features *after* CLIP's head
(``fuse`` takes D_emb channels) where mmmask's ``dense_proj`` takes the trunk's D_dense channels.
A converted model is therefore a partial initialisation, never claimed equivalent: the report
lists every key mapped, unused and missing.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["ConversionReport", "load_official_checkpoint", "detect_variant", "convert_official",
           "VARIANTS"]

VARIANTS = ("fcclip", "mask_adapter_fcclip", "mask_adapter_maftp")

_PRED = r"sem_seg_head\.predictor\."
_QD = "mask_generator.query_decoder."
# (source regex, target template); the first matching rule wins. Targets use \1-style groups.
_DECODER_RULES = [
    (_PRED + r"query_feat\.weight$", _QD + "query_feat.weight"),
    (_PRED + r"query_embed\.weight$", _QD + "query_pos.weight"),
    (_PRED + r"level_embed\.weight$", _QD + "level_embed.weight"),
    (_PRED + r"decoder_norm\.(weight|bias)$", _QD + r"decoder_norm.\1"),
    (_PRED + r"mask_embed\.layers\.(\d+)\.(weight|bias)$", _QD + r"mask_embed.layers.\1.\2"),
    (_PRED + r"transformer_self_attention_layers\.(\d+)\.self_attn\.(.+)$",
     _QD + r"layers.\1.self_attn.attn.\2"),
    (_PRED + r"transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)$",
     _QD + r"layers.\1.self_attn.norm.\2"),
    (_PRED + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)$",
     _QD + r"layers.\1.cross_attn.attn.\2"),
    (_PRED + r"transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)$",
     _QD + r"layers.\1.cross_attn.norm.\2"),
    (_PRED + r"transformer_ffn_layers\.(\d+)\.linear1\.(weight|bias)$",
     _QD + r"layers.\1.ffn.net.0.\2"),
    (_PRED + r"transformer_ffn_layers\.(\d+)\.linear2\.(weight|bias)$",
     _QD + r"layers.\1.ffn.net.3.\2"),
    (_PRED + r"transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)$",
     _QD + r"layers.\1.ffn.norm.\2"),
]
_ADAPTER_RULES = [
    (r"mask_adapter\.cnext(\d+)\.dwconv\.(weight|bias)$", "classifier.blocks.{b}.dwconv.\\2"),
    (r"mask_adapter\.cnext(\d+)\.norm\.(weight|bias)$", "classifier.blocks.{b}.norm.\\2"),
    (r"mask_adapter\.cnext(\d+)\.pwconv1\.(weight|bias)$", "classifier.blocks.{b}.fc1.\\2"),
    (r"mask_adapter\.cnext(\d+)\.pwconv2\.(weight|bias)$", "classifier.blocks.{b}.fc2.\\2"),
    (r"mask_adapter\.norm\.(weight|bias)$", r"classifier.out_norm.\1"),
    (r"mask_adapter\.final\.(weight|bias)$", r"classifier.to_maps.\1"),
    (r"mask_adapter\.fuse\.(weight|bias)$", r"classifier.dense_proj.\1"),
]
_UNUSED_REASONS = [
    (r"sem_seg_head\.pixel_decoder\.", "MSDeformAttn pixel decoder: mmmask's PMP uses a conv FPN"),
    (_PRED + r"class_embed\.", "FC-CLIP's class MLP differs from PMP's linear class head"),
    (r"mask_adapter\.mask_downscaling\.",
     "official mask stem (3x3 stride-2 convs into CLIP's width) differs from mmmask's"),
    (r"mask_adapter\.cnext\d+\.gamma$", "folded into fc2 (layer scale)"),
    (r"cdt\.", "MAFT+ content-dependent transfer has no counterpart in mmmask"),
    (r"criterion\.", "training-only buffer"),
]


@dataclass
class ConversionReport:
    """Outcome of a conversion: ``state`` holds the converted tensors under mmmask keys."""

    variant: str
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    mapped: list[tuple[str, str, str]] = field(default_factory=list)  # (source, target, note)
    unused: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    missing: list[str] = field(default_factory=list)  # target keys left as initialised

    def summary(self) -> str:
        groups: dict[str, int] = {}
        for _, reason in self.unused:
            groups[reason] = groups.get(reason, 0) + 1
        lines = [f"variant {self.variant}: {len(self.mapped)} keys mapped, "
                 f"{len(self.unused)} unused, {len(self.missing)} mmmask keys missing"]
        lines += [f"  unused ({n}): {reason}" for reason, n in sorted(groups.items())]
        prefixes: dict[str, int] = {}
        for k in self.missing:
            p = ".".join(k.split(".")[:2])
            prefixes[p] = prefixes.get(p, 0) + 1
        lines += [f"  missing ({n}): {p}.*" for p, n in sorted(prefixes.items())]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"variant": self.variant,
                "mapped": [{"source": s, "target": t, "note": n} for s, t, n in self.mapped],
                "unused": [{"source": s, "reason": r} for s, r in self.unused],
                "missing": list(self.missing)}

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.as_dict(), f, indent=1)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dicts and plain values only (detectron2 .pkl model zoo files)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .pkl checkpoint")
        return super().find_class(module, name)


def load_official_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from an official checkpoint (see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj: object = load_file(path, device="cpu")
    elif path.endswith(".pkl"):
        import numpy as np

        with open(path, "rb") as f:
            try:
                obj = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
            except pickle.UnpicklingError as e:
                raise ValueError(f"{path}: {e}") from None
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]
        obj = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in obj.items()
               if isinstance(v, np.ndarray)}
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: cannot be read with weights_only=True ({type(e).__name__})"
                             ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    """"mask_adapter_maftp" (has ``cdt.*``), "mask_adapter_fcclip" (``mask_adapter.*``) or
    "fcclip" (``sem_seg_head.*``); ValueError when none fits."""
    keys = list(state)
    if any(k.startswith("mask_adapter.") for k in keys):
        return "mask_adapter_maftp" if any(k.startswith("cdt.") for k in keys) \
            else "mask_adapter_fcclip"
    if any(k.startswith("sem_seg_head.") for k in keys) or \
            any(k.startswith("backbone.clip_model.") for k in keys):
        return "fcclip"
    raise ValueError(f"Unrecognised checkpoint (first keys {keys[:5]}); valid variants: "
                     f"{list(VARIANTS)}")


def _target_of(key: str, variant: str) -> str | None:
    if key.startswith("backbone.clip_model."):
        return "backbone.clip." + key[len("backbone.clip_model."):]
    if key == "void_embedding.weight":
        return "classifier.void_embedding" if variant.startswith("mask_adapter") \
            else _QD + "void_embed"
    for pattern, template in _DECODER_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, template, key)
    for pattern, template in _ADAPTER_RULES:
        m = re.match(pattern, key)
        if m:
            block = int(m.group(1)) - 1 if "cnext" in pattern else 0
            return re.sub(pattern, template.replace("{b}", str(block)), key)
    return None


def _fit(value: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, str] | None:
    """``value`` in ``shape`` when only the layout differs (1x1 conv <-> linear, [1, D] <-> [D])."""
    if value.shape == shape:
        return value, ""
    if value.numel() == torch.Size(shape).numel() and value.squeeze().shape == \
            torch.empty(shape).squeeze().shape:
        return value.reshape(shape), f"reshaped {tuple(value.shape)} -> {tuple(shape)}"
    return None


def convert_official(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *,
                     variant: str | None = None,
                     progress: Callable[[str], None] | None = None) -> ConversionReport:
    """Map an official state dict onto ``target`` (an mmmask model's ``state_dict()``)."""
    variant = variant or detect_variant(state)
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; valid: {list(VARIANTS)}")
    report = ConversionReport(variant)
    gammas = {k[: -len("gamma")]: v for k, v in state.items()
              if re.match(r"mask_adapter\.cnext\d+\.gamma$", k)}
    for key, value in state.items():
        reason = next((r for p, r in _UNUSED_REASONS if re.match(p, key)), None)
        dst = None if reason else _target_of(key, variant)
        if dst is None:
            report.unused.append((key, reason or "no counterpart in mmmask"))
            continue
        if dst not in target:
            report.unused.append((key, f"mmmask has no {dst} (smaller model?)"))
            continue
        value = value.float() if value.is_floating_point() else value
        note = ""
        prefix = key.rsplit("pwconv2.", 1)[0]
        if ".pwconv2." in key and prefix in gammas:  # fold the layer scale: gamma * (W x + b)
            g = gammas[prefix].float().reshape(-1)
            value = value * (g.reshape(-1, *([1] * (value.dim() - 1))))
            note = "layer scale gamma folded in"
        fitted = _fit(value, target[dst].shape)
        if fitted is None:
            report.unused.append((key, f"shape {tuple(value.shape)} vs mmmask "
                                       f"{dst} {tuple(target[dst].shape)}"))
            continue
        report.state[dst] = fitted[0].contiguous()
        report.mapped.append((key, dst, "; ".join(n for n in (note, fitted[1]) if n)))
    report.missing = [k for k in target if k not in report.state]
    if progress:
        progress(report.summary())
    return report
