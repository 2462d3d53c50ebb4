"""High-level CM3 generation: captioning, text-to-image, image and text infilling, region edits.

One decoder serves every task by prompt alone (see :mod:`.documents`)::

    gen = CM3Generator.from_config(load_cfg("configs/shapes/cm3.yaml"), weights="model.safetensors")
    gen.caption(image)                                   # -> str
    gen.text_to_image("a red star on grass", seed=0)     # -> uint8 HxWx3
    gen.infill_image(image, (8, 8, 40, 40), "a blue ring")
    gen.infill_text("a photo of a [MASK] on sandy ground")
    gen.edit_region(image, mask_from_segmenter, "a yellow hexagon")

Images are uint8 HxWx3 arrays (RGB; HxW grayscale and HxWx4 RGBA accepted) of any size: they are
resized to the tokenizer's square input and results are resized back.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .documents import (
    ALT_OPEN, SRC_OPEN, TAG_CLOSE, build_document, escape_caption, max_caption_bytes,
    masked_prompt, text_to_image_prompt, truncate_caption, unescape_caption, caption_prompt,
)
from .generate import IncrementalDecoder
from .meta_arch import CM3DocumentModel, cm3_model_kwargs, load_cm3_weights
from .model import CM3 as CM3Decoder
from .regions import box_to_mask, cells_to_spans, mask_to_cells
from .tokenizer import Vocab
from .vq import VQTokenizer

__all__ = ["CM3Generator", "MASK_TOKEN", "as_rgb_uint8", "default_cm3_config_file"]

logger = logging.getLogger(__name__)

MASK_TOKEN = "[MASK]"


def default_cm3_config_file() -> str:
    """The config of the shipped Shapes-OV CM3 model (inside the package; may be absent)."""
    from mmmask.utils.weights import SHIPPED_DIR

    return str(SHIPPED_DIR / "shapes_cm3.yaml")


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image array and return it as HxWx3 uint8 (gray / RGBA converted)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 1:
        raise ValueError(f"Expected an HxWx3 (or HxW, HxWx4) image; got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
            a = a * 255.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float Tensor[B, 3, H, W] -> Tensor[B, 3, *size] (bilinear, antialiased)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)


class CM3Generator:
    """VQ tokenizer + CM3 decoder + vocabulary, with task-level methods (numpy in, numpy out)."""

    def __init__(self, *, vq: VQTokenizer, model: CM3Decoder, vocab: Vocab, max_spans: int = 3,
                 cfg_scale: float = 3.0, temperature: float = 1.0, top_k: int | None = 64,
                 max_text_tokens: int = 120) -> None:
        if vocab.size != model.config.vocab_size:
            raise ValueError(f"Vocab size {vocab.size} != model vocab_size "
                             f"{model.config.vocab_size}")
        self.vq, self.model, self.vocab = vq.eval(), model.eval(), vocab
        self.max_spans = max_spans
        self.cfg_scale, self.temperature = cfg_scale, temperature
        self.top_k = top_k if top_k else None
        self.max_text_tokens = max_text_tokens
        self.grid = (vq.grid_size, vq.grid_size)
        self.max_caption = max_caption_bytes(model.config.block_size, vq.grid_size ** 2, 0)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: CM3DocumentModel, **kwargs) -> "CM3Generator":
        """From a (trained) ``CM3`` meta-architecture instance."""
        kwargs.setdefault("max_spans", model.max_spans)
        return cls(vq=model.vq, model=model.transformer, vocab=model.vocab, **kwargs)

    @classmethod
    def from_config(cls, cfg, weights: str | None = None,
                    device: str | torch.device | None = None) -> "CM3Generator":
        """Build the ``CM3`` meta-architecture of ``cfg`` and load ``weights`` (default
        ``cfg.MODEL.WEIGHTS``; "" = random weights, for tests)."""
        path = cfg.MODEL.WEIGHTS if weights is None else weights
        # a whole-model checkpoint holds the tokenizer: CM3.VQ.WEIGHTS is read only without one
        model = CM3DocumentModel(**cm3_model_kwargs(cfg, load_vq_weights=not path))
        if path:
            load_cm3_weights(model, path)
        else:
            logger.warning("CM3Generator built without weights (MODEL.WEIGHTS is empty): "
                           "outputs are random")
        if device is None:
            device = cfg.MODEL.DEVICE
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        g = cfg.CM3.GENERATE
        return cls.from_model(model, cfg_scale=g.CFG_SCALE, temperature=g.TEMPERATURE,
                              top_k=g.TOP_K, max_text_tokens=g.MAX_TEXT_TOKENS)

    @classmethod
    def from_files(cls, config_file: str | None = None, weights: str | None = None,
                   opts: Sequence[str] | None = None,
                   device: str | torch.device | None = None) -> "CM3Generator":
        """Config file (default: the shipped CM3 model's), optional weights (overriding
        ``MODEL.WEIGHTS``; "" = random) and ``KEY VALUE`` opts.

        Raises ``FileNotFoundError`` with one clear line when no config is given and no CM3
        model is shipped.
        """
        import os

        from mmmask.config import load_cfg

        if config_file is None:
            config_file = default_cm3_config_file()
            if not os.path.isfile(config_file):
                raise FileNotFoundError(
                    f"No CM3 model is shipped with this install ({config_file} is missing); "
                    "pass --config-file F and --weights W (a trained CM3 model)")
        elif not os.path.isfile(config_file):
            raise FileNotFoundError(f"Config file not found: {config_file}")
        cfg = load_cfg(config_file, list(opts or []))
        return cls.from_config(cfg, weights=weights, device=device)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # ---- images <-> codes ----------------------------------------------------------------------
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """Image (any size) -> codes LongTensor[h, w] of its resized square version."""
        a = as_rgb_uint8(image)
        t = torch.from_numpy(a).permute(2, 0, 1)[None].float().to(self.device)  # (1, 3, H, W)
        s = self.vq.image_size
        t = _resize(t, (s, s)).round().clamp(0, 255).to(torch.uint8)
        return self.vq.encode(t)[0]

    def decode_codes(self, codes: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
        """Codes LongTensor[h, w] -> uint8 HxWx3 (at ``size`` (H, W) if given)."""
        img = self.vq.decode(codes.reshape(1, *self.grid).to(self.device))  # (1, 3, S, S)
        if size is not None:
            img = _resize(img, size)
        return (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()

    # ---- helpers -------------------------------------------------------------------------------
    def _tensor(self, ids: Sequence[int]) -> torch.Tensor:
        if len(ids) > self.model.config.block_size:
            raise ValueError(f"Prompt of {len(ids)} tokens exceeds block_size "
                             f"{self.model.config.block_size}")
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    def _generator(self, seed: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seed))
        return g

    def _sample_kw(self, temperature: float | None, top_k: int | None) -> dict:
        return {"temperature": self.temperature if temperature is None else temperature,
                "top_k": self.top_k if top_k is None else (top_k or None)}

    def _text_span(self, dec: IncrementalDecoder, stop: int, gen: torch.Generator,
                   temperature: float) -> str:
        allowed = self.vocab.text_mask().to(self.device)
        allowed[stop] = True
        room = self.model.config.block_size - dec.tokens.shape[1]
        n = min(self.max_text_tokens, room)
        if n <= 0:
            raise ValueError("No room left in block_size to generate text")
        new = dec.sample(n, temperature=temperature, allowed_ids=allowed, stop_ids=[stop],
                         generator=gen)[0].tolist()
        if stop in new:
            new = new[: new.index(stop)]
        elif dec.tokens.shape[1] < self.model.config.block_size:
            dec.feed(stop)
        return unescape_caption(self.vocab.decode_text(new))

    # ---- tasks ---------------------------------------------------------------------------------
    def caption(self, image: np.ndarray, *, temperature: float = 0.0, seed: int = 0) -> str:
        """Caption ``image``: infill the alt text of ``<img alt="<mask:0>" src="IMAGE">``."""
        codes = self.encode_image(image)
        dec = IncrementalDecoder(self.model, self._tensor(caption_prompt(self.vocab, codes)))
        return self._text_span(dec, self.vocab.eos_id, self._generator(seed), temperature)

    def text_to_image(self, text: str, *, seed: int = 0, cfg_scale: float | None = None,
                      temperature: float | None = None, top_k: int | None = None) -> np.ndarray:
        """Sample an image (uint8 SxSx3) for ``text``: ``<img alt="TEXT" src="`` + codes."""
        scale = self.cfg_scale if cfg_scale is None else cfg_scale
        text = truncate_caption(text, self.max_caption)
        cond = self._tensor(text_to_image_prompt(self.vocab, text))
        uncond = self._tensor(text_to_image_prompt(self.vocab, "")) if scale != 1 else None
        dec = IncrementalDecoder(self.model, cond, uncond_prompt=uncond, cfg_scale=scale)
        n = self.grid[0] * self.grid[1]
        new = dec.sample(n, allowed_ids=self.vocab.image_mask().to(self.device),
                         generator=self._generator(seed), **self._sample_kw(temperature, top_k))
        return self.decode_codes(new[0] - self.vocab.image_offset)

    def infill_image(self, image: np.ndarray, region: np.ndarray | Sequence[float],
                     prompt: str | None = None, *, seed: int = 0, cfg_scale: float | None = None,
                     temperature: float | None = None, top_k: int | None = None) -> np.ndarray:
        """Regenerate the ``region`` (bool HxW mask or XYXY box) of ``image`` from context on
        both sides (and ``prompt`` as the alt text). Pixels outside the region are kept.

        Token cells overlapping the region become ``<mask:i>`` spans (row-major runs, merged
        down to ``max_spans``); the spans are generated after the document, in order.
        """
        img = as_rgb_uint8(image)
        H, W = img.shape[:2]
        if isinstance(region, np.ndarray) and region.ndim == 2:
            if region.shape != (H, W):
                raise ValueError(f"Region mask {region.shape} does not match the image {(H, W)}")
            mask = region.astype(bool)
        else:
            mask = box_to_mask(region, H, W)
        if not mask.any():
            raise ValueError("The region to infill is empty")
        cells = mask_to_cells(mask, self.grid)
        codes = self.infill_codes(self.encode_image(img), cells, prompt, seed=seed,
                                  cfg_scale=cfg_scale, temperature=temperature, top_k=top_k)
        out = self.decode_codes(codes, (H, W))
        return np.where(mask[..., None], out, img)

    def infill_alt_text(self, prompt: str | None, num_spans: int) -> str:
        """``prompt`` cut to fit a masked document with ``num_spans`` spans (each span adds two
        sentinels, so the alt text gets less room than a caption)."""
        n = self.grid[0] * self.grid[1]
        return truncate_caption(prompt or "", max_caption_bytes(self.model.config.block_size, n,
                                                                num_spans))

    def infill_codes(self, codes: torch.Tensor, cells: np.ndarray, prompt: str | None = None, *,
                     seed: int = 0, cfg_scale: float | None = None,
                     temperature: float | None = None, top_k: int | None = None
                     ) -> torch.Tensor:
        """Regenerate the selected ``cells`` (bool h x w) of ``codes`` LongTensor[h, w].

        Returns new codes LongTensor[h, w]; codes outside the spans covering ``cells`` are
        unchanged (spans may also cover unselected cells between merged runs).
        """
        codes = codes.reshape(-1).clone()
        spans = cells_to_spans(cells, min(self.max_spans, self.vocab.num_sentinels))
        if not spans:
            raise ValueError("No token cell selected to infill")
        text = self.infill_alt_text(prompt, len(spans))
        doc = build_document(self.vocab, text, codes)
        off = doc.image_span[0]
        scale = self.cfg_scale if cfg_scale is None else cfg_scale
        cond = masked_prompt(self.vocab, doc.ids, [(s + off, e + off) for s, e in spans])
        total = len(cond) + sum(e - s for s, e in spans) + len(spans) - 1
        if total > self.model.config.block_size:
            raise ValueError(f"Infilling needs {total} tokens > block_size "
                             f"{self.model.config.block_size}; use a shorter prompt")
        uncond = None
        if scale != 1 and text:
            udoc = build_document(self.vocab, "", codes)
            uoff = udoc.image_span[0]
            uncond = self._tensor(masked_prompt(self.vocab, udoc.ids,
                                                [(s + uoff, e + uoff) for s, e in spans]))
        dec = IncrementalDecoder(self.model, self._tensor(cond), uncond_prompt=uncond,
                                 cfg_scale=scale)
        gen, kw = self._generator(seed), self._sample_kw(temperature, top_k)
        allowed = self.vocab.image_mask().to(self.device)
        for i, (s, e) in enumerate(spans):
            if i > 0:
                dec.feed(self.vocab.sentinel(i))
            new = dec.sample(e - s, allowed_ids=allowed, generator=gen, **kw)[0]
            codes[s:e] = new.to(codes.device) - self.vocab.image_offset
        return codes.reshape(self.grid)

    def edit_region(self, image: np.ndarray, mask: np.ndarray, prompt: str, **kwargs
                    ) -> np.ndarray:
        """Segment-then-edit: regenerate the pixels of ``mask`` (from a segmenter) from
        ``prompt``. Same as :meth:`infill_image` with a required prompt."""
        if not prompt or not prompt.strip():
            raise ValueError("edit_region needs a non-empty prompt describing the new content")
        return self.infill_image(image, np.asarray(mask).astype(bool), prompt, **kwargs)

    def infill_text(self, text: str | Sequence[str], image: np.ndarray | None = None, *,
                    seed: int = 0, temperature: float = 0.0) -> str:
        """Fill the ``[MASK]`` gaps of ``text`` (or the gaps between ``segments``) as a caption.

        With ``image`` the caption is conditioned on it; without, an image is sampled first
        (the model is joint over captions and images) and the text conditioned on that.
        Returns the completed text.
        """
        segments = text.split(MASK_TOKEN) if isinstance(text, str) else list(text)
        n = len(segments) - 1
        if n < 1:
            raise ValueError(f"infill_text needs at least one {MASK_TOKEN} (or two segments)")
        if n > self.vocab.num_sentinels:
            raise ValueError(f"At most {self.vocab.num_sentinels} gaps; got {n}")
        v = self.vocab
        ids = [v.bos_id] + v.encode_text(ALT_OPEN)
        for i, seg in enumerate(segments):
            ids += v.encode_text(escape_caption(seg))
            if i < n:
                ids.append(v.sentinel(i))
        ids += v.encode_text(SRC_OPEN)
        gen = self._generator(seed)
        if image is not None:
            ids += v.image_to_ids(self.encode_image(image)) + v.encode_text(TAG_CLOSE)
            ids.append(v.sentinel(0))
            dec = IncrementalDecoder(self.model, self._tensor(ids))
        else:
            dec = IncrementalDecoder(self.model, self._tensor(ids))
            dec.sample(self.grid[0] * self.grid[1], allowed_ids=v.image_mask().to(self.device),
                       generator=gen, **self._sample_kw(None, None))
            dec.feed(self._tensor(v.encode_text(TAG_CLOSE) + [v.sentinel(0)]))
        fills = []
        for i in range(n):
            stop = v.sentinel(i + 1) if i + 1 < n else v.eos_id
            fills.append(self._text_span(dec, stop, gen, temperature))
        out = segments[0]
        for fill, seg in zip(fills, segments[1:]):
            out += fill + seg
        return out
