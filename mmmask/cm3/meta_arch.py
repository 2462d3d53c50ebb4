"""The trainable CM3 model of a config: a frozen VQ tokenizer + the CM3 decoder + the vocabulary.

``forward(batch)`` takes the ``CM3DocumentMapper``'s dicts (``image`` uint8 Tensor[3, H, W],
``caption`` str, ``cm3_seed`` int), turns each into a document (:mod:`.documents`), applies the CM3
transform (:mod:`.masking`, seeded by ``cm3_seed``), and returns ``{"loss_cm3": loss}`` in train
mode; in eval mode one ``{"nll": float, "num_tokens": int}`` per document.

Registered as ``CM3`` in META_ARCH_REGISTRY and GENERATIVE_MODEL_REGISTRY (the builder function
:func:`CM3` below; the decoder class itself is :class:`mmmask.cm3.model.CM3`). Its state dict holds
both parts (``vq.*``, ``transformer.*``), so one weight file serves generation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..config import configurable
from ..registry import GENERATIVE_MODEL_REGISTRY, META_ARCH_REGISTRY
from ..utils.weights import load_matching, load_state_dict_file
from .documents import build_document, max_caption_bytes, truncate_caption
from .masking import apply_spans, sample_spans
from .model import CM3 as CM3Decoder
from .model import CM3Config
from .tokenizer import Vocab
from .vq import VQTokenizer

__all__ = ["CM3DocumentModel", "CM3", "cm3_model_kwargs", "load_cm3_weights"]


def load_cm3_weights(model: "CM3DocumentModel", path: str) -> None:
    """Load a whole-model checkpoint (``vq.*`` + ``transformer.*``) into ``model``, checking the
    vocabulary size first (a clear message for a checkpoint of another config) and every shape."""
    state = dict(load_state_dict_file(path))
    head, wte = "transformer.lm_head.weight", "transformer.transformer.wte.weight"
    if head in state or wte in state:  # tied weights: a file may store only one of the two
        tied = state.get(head, state.get(wte))
        state.setdefault(head, tied)
        state.setdefault(wte, tied)
        want = model.transformer.config.vocab_size
        if tied.shape[0] != want:
            raise ValueError(
                f"{path} has a vocabulary of {tied.shape[0]} tokens but the config gives "
                f"{want} (check CM3.VQ.CODEBOOK_SIZE and CM3.NUM_SENTINELS)"
            )
    load_matching(model, state, source=path)


class CM3DocumentModel(nn.Module):
    """Frozen ``vq`` + trainable ``transformer`` trained on CM3-masked image-caption documents."""

    @configurable
    def __init__(self, *, vq: VQTokenizer, transformer: CM3Decoder, vocab: Vocab,
                 poisson_lambda: float = 1.0, max_spans: int = 3, causal_only: bool = False,
                 caption_span_prob: float = 0.25, caption_drop_prob: float = 0.1) -> None:
        super().__init__()
        if vocab.size != transformer.config.vocab_size:
            raise ValueError(f"Vocab size {vocab.size} != decoder vocab_size "
                             f"{transformer.config.vocab_size}")
        if max_spans > vocab.num_sentinels:
            raise ValueError(f"MAX_SPANS {max_spans} > NUM_SENTINELS {vocab.num_sentinels}")
        self.vq = vq.eval().requires_grad_(False)
        self.transformer = transformer
        self.vocab = vocab
        self.poisson_lambda, self.max_spans = poisson_lambda, max_spans
        self.causal_only = causal_only
        self.caption_span_prob, self.caption_drop_prob = caption_span_prob, caption_drop_prob
        n_img = vq.grid_size ** 2
        self.max_caption = max_caption_bytes(transformer.config.block_size, n_img, max_spans)

    @classmethod
    def from_config(cls, cfg) -> dict:
        return cm3_model_kwargs(cfg)

    def train(self, mode: bool = True) -> "CM3DocumentModel":
        super().train(mode)
        self.vq.eval()  # the tokenizer stays frozen (no EMA updates, no dropout)
        return self

    # ---- documents ---------------------------------------------------------------------------
    def make_sequence(self, caption: str, codes: torch.Tensor, seed: int
                      ) -> tuple[list[int], list[float]]:
        """One training sequence (CM3-masked document + ``<eos>``) and its loss weights.

        A pure function of ``(caption, codes, seed)``: the caption is dropped with probability
        ``caption_drop_prob``; the span is the caption with ``caption_span_prob``; otherwise
        ``n ~ Poisson`` uniform spans (never covering ``<bos>``); none with ``causal_only``.
        """
        rng = np.random.default_rng(seed)
        if rng.random() < self.caption_drop_prob:
            caption = ""
        doc = build_document(self.vocab, truncate_caption(caption, self.max_caption), codes)
        cs, ce = doc.caption_span
        if self.causal_only:
            spans: list[tuple[int, int]] = []
        elif ce > cs and rng.random() < self.caption_span_prob:
            spans = [(cs, ce)]
        else:
            spans = sample_spans(len(doc.ids), rng, poisson_lambda=self.poisson_lambda,
                                 max_spans=self.max_spans, min_spans=1, start=1)
        return apply_spans(doc.ids, spans, sentinel_ids=self.vocab.sentinel_ids,
                           eos_id=self.vocab.eos_id)

    def fsdp_units(self) -> list[nn.Module]:
        """FSDP units (``SOLVER.FSDP``): the decoder's blocks; the rest shards with the root."""
        return self.transformer.fsdp_units()

    def collate(self, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch -> (inputs LongTensor[B, T], targets LongTensor[B, T] (-1 = pad),
        weights FloatTensor[B, T])."""
        device = self.transformer.lm_head.weight.device
        images = torch.stack([d["image"] for d in batch]).to(device)
        codes = self.vq.encode(images)  # (B, h, w)
        seqs = [self.make_sequence(d.get("caption", ""), c, int(d.get("cm3_seed", i)))
                for i, (d, c) in enumerate(zip(batch, codes))]
        T = max(len(ids) for ids, _ in seqs) - 1
        inputs = torch.full((len(seqs), T), self.vocab.pad_id, dtype=torch.long)
        targets = torch.full((len(seqs), T), -1, dtype=torch.long)
        weights = torch.zeros((len(seqs), T))
        for b, (ids, w) in enumerate(seqs):
            n = len(ids) - 1
            inputs[b, :n] = torch.tensor(ids[:-1])
            targets[b, :n] = torch.tensor(ids[1:])
            weights[b, :n] = torch.tensor(w[1:])  # weight of predicting token t+1
        return inputs.to(device), targets.to(device), weights.to(device)

    def forward(self, batch: list[dict]):
        if not isinstance(batch, (list, tuple)) or not batch:
            raise ValueError("CM3 forward takes a non-empty list of CM3DocumentMapper dicts")
        inputs, targets, weights = self.collate(batch)
        if self.training:
            _, loss = self.transformer(inputs, targets=targets, loss_weights=weights)
            return {"loss_cm3": loss}
        with torch.no_grad():
            logits, _ = self.transformer(inputs, targets=targets, loss_weights=weights)
            ce = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), targets.clamp(min=0).flatten(), reduction="none"
            ).view_as(weights)  # (B, T)
            w = weights * (targets >= 0)
        return [{"nll": float((c * m).sum() / m.sum().clamp(min=1)), "num_tokens": int(m.sum())}
                for c, m in zip(ce, w)]


def cm3_model_kwargs(cfg, load_vq_weights: bool = True) -> dict:
    """Keyword arguments of :class:`CM3DocumentModel` from ``cfg``; the VQ weights of
    ``CM3.VQ.WEIGHTS`` are loaded unless ``load_vq_weights`` is False (e.g. when a whole-model
    checkpoint, which holds the tokenizer too, is loaded next)."""
    vq = VQTokenizer(cfg)
    if load_vq_weights and cfg.CM3.VQ.WEIGHTS:
        state = load_state_dict_file(cfg.CM3.VQ.WEIGHTS, config_key="CM3.VQ.WEIGHTS")
        load_matching(vq, state, source=cfg.CM3.VQ.WEIGHTS)
    vocab = Vocab(num_image_codes=cfg.CM3.VQ.CODEBOOK_SIZE, num_sentinels=cfg.CM3.NUM_SENTINELS)
    config = CM3Config(vocab_size=vocab.size, block_size=cfg.CM3.BLOCK_SIZE,
                       n_layer=cfg.CM3.N_LAYER, n_head=cfg.CM3.N_HEAD, n_embd=cfg.CM3.N_EMBD,
                       dropout=cfg.CM3.DROPOUT)
    return dict(vq=vq, transformer=CM3Decoder(config), vocab=vocab,
                poisson_lambda=cfg.CM3.POISSON_LAMBDA, max_spans=cfg.CM3.MAX_SPANS,
                causal_only=cfg.CM3.CAUSAL_ONLY, caption_span_prob=cfg.CM3.CAPTION_SPAN_PROB,
                caption_drop_prob=cfg.CM3.CAPTION_DROP_PROB)


@META_ARCH_REGISTRY.register()
@GENERATIVE_MODEL_REGISTRY.register()
def CM3(cfg) -> CM3DocumentModel:  # noqa: N802  (the registry name)
    """Builder of the ``CM3`` meta-architecture: :class:`CM3DocumentModel` from ``cfg``."""
    return CM3DocumentModel(cfg)
