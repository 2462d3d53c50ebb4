"""Sampling from a :class:`~mmmask.cm3.model.CM3` decoder.

- :func:`generate_reference`: recomputes the whole sequence for every new token (no cache): the
  obviously correct oracle.
- :func:`generate`: the same samples with a KV cache (prefill once, then one token per step).
- :class:`IncrementalDecoder`: the cached stream behind :func:`generate`, for multi-stage prompts
  (force tokens, sample a few, force more) as infilling needs.

Shared sampling rules (:func:`sample_next`): classifier-free guidance ``u + s * (c - u)`` on the
raw logits, then the allowed-id constraint, then ``temperature`` (0 = greedy), ``top_k``, ``top_p``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .model import CM3, KVCache

__all__ = ["cfg_logits", "sample_next", "generate_reference", "generate", "IncrementalDecoder"]

AllowedIds = torch.Tensor | Sequence[int] | None


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (scale 1 = conditional)."""
    return uncond + scale * (cond - uncond)


def _allowed_mask(allowed: AllowedIds, vocab_size: int, device) -> torch.Tensor | None:
    if allowed is None:
        return None
    a = torch.as_tensor(allowed, device=device)
    if a.dtype == torch.bool:
        if a.shape != (vocab_size,):
            raise ValueError(f"allowed_ids mask must have shape ({vocab_size},); got {a.shape}")
        return a
    m = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    m[a.long()] = True
    return m


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, allowed: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from ``logits`` Tensor[B, V]; returns LongTensor[B, 1]."""
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the first over top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _done(out: torch.Tensor, start: int, stop: torch.Tensor | None) -> bool:
    if stop is None:
        return False
    return bool(stop[out[:, start:]].any(dim=1).all())


@torch.no_grad()
def generate_reference(model: CM3, idx: torch.Tensor, max_new_tokens: int, *,
                       temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, allowed_ids: AllowedIds = None,
                       stop_ids: AllowedIds = None, uncond_idx: torch.Tensor | None = None,
                       cfg_scale: float = 1.0, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
    """Append up to ``max_new_tokens`` to ``idx`` LongTensor[B, T], recomputing every step.

    Stops early once every row has produced one of ``stop_ids`` (rows keep sampling until then;
    callers cut at the first stop). With ``uncond_idx`` LongTensor[B, T_u], logits are guided
    by :func:`cfg_logits`; both sequences receive the sampled token.
    Returns LongTensor[B, T + new].
    """
    V, bs = model.config.vocab_size, model.config.block_size
    allowed = _allowed_mask(allowed_ids, V, idx.device)
    stop = _allowed_mask(stop_ids, V, idx.device)
    out, unc = idx, uncond_idx
    for _ in range(max_new_tokens):
        logits, _ = model(out[:, -bs:])
        logits = logits[:, -1, :]
        if unc is not None:
            logits = cfg_logits(logits, model(unc[:, -bs:])[0][:, -1, :], cfg_scale)
        nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                          allowed=allowed, generator=generator)
        out = torch.cat([out, nxt], dim=1)
        if unc is not None:
            unc = torch.cat([unc, nxt], dim=1)
        if _done(out, idx.shape[1], stop):
            break
    return out


class IncrementalDecoder:
    """A cached decoding stream (plus an unconditional one for guidance) over one batch.

    ``feed(tokens)`` appends forced tokens; ``sample(n, ...)`` draws ``n`` tokens one at a time.
    ``tokens`` holds every token so far (LongTensor[B, T]). Sequences may not exceed block_size.
    """

    def __init__(self, model: CM3, prompt: torch.Tensor, *,
                 uncond_prompt: torch.Tensor | None = None, cfg_scale: float = 1.0) -> None:
        if prompt.dim() != 2:
            raise ValueError(f"prompt must be LongTensor[B, T]; got shape {tuple(prompt.shape)}")
        self.model = model
        self.cfg_scale = cfg_scale
        self.tokens = prompt[:, :0]
        self._cache: KVCache = model.new_cache(prompt.shape[0])
        self._ucache: KVCache | None = None
        self._logits: torch.Tensor | None = None
        self._ulogits: torch.Tensor | None = None
        self._pending: torch.Tensor | None = None  # sampled but not yet run through the model
        self.feed(prompt)  # the conditional stream only
        if uncond_prompt is not None:
            self._ucache = model.new_cache(prompt.shape[0])
            with torch.no_grad():
                self._ulogits = model(uncond_prompt, kv_cache=self._ucache)[0][:, -1, :]

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> None:
        """Append LongTensor[B, n] (or one int per row) to the stream(s)."""
        if isinstance(tokens, int):
            tokens = torch.full((self.tokens.shape[0], 1), tokens, dtype=torch.long,
                                device=self.tokens.device)
        run = tokens if self._pending is None else torch.cat([self._pending, tokens], dim=1)
        self._pending = None
        if run.shape[1] == 0:
            return
        self._logits = self.model(run, kv_cache=self._cache)[0][:, -1, :]
        if self._ucache is not None:
            self._ulogits = self.model(run, kv_cache=self._ucache)[0][:, -1, :]
        self.tokens = torch.cat([self.tokens, tokens], dim=1)

    def next_logits(self) -> torch.Tensor:
        """Guided logits Tensor[B, V] of the next token."""
        if self._pending is not None:  # run the last sampled token first
            self.feed(self.tokens[:, :0])
        if self._logits is None:
            raise RuntimeError("feed() a prompt before sampling")
        if self._ulogits is None:
            return self._logits
        return cfg_logits(self._logits, self._ulogits, self.cfg_scale)

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, allowed_ids: AllowedIds = None,
               stop_ids: AllowedIds = None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Sample up to ``n`` tokens (early stop as in :func:`generate_reference`); returns them."""
        V = self.model.config.vocab_size
        allowed = _allowed_mask(allowed_ids, V, self.tokens.device)
        stop = _allowed_mask(stop_ids, V, self.tokens.device)
        start = self.tokens.shape[1]
        for step in range(n):
            nxt = sample_next(self.next_logits(), temperature=temperature, top_k=top_k,
                              top_p=top_p, allowed=allowed, generator=generator)
            if step == n - 1:  # the last token runs through the model only when needed
                self.tokens = torch.cat([self.tokens, nxt], dim=1)
                self._pending, self._logits, self._ulogits = nxt, None, None
                break
            self.feed(nxt)
            if _done(self.tokens, start, stop):
                break
        return self.tokens[:, start:]


@torch.no_grad()
def generate(model: CM3, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             allowed_ids: AllowedIds = None, stop_ids: AllowedIds = None,
             uncond_idx: torch.Tensor | None = None, cfg_scale: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`generate_reference` with a KV cache: same arguments, same tokens.

    The prompt plus new tokens must fit in ``block_size`` (``ValueError`` otherwise): the cache
    does not slide.
    """
    bs = model.config.block_size
    longest = max(idx.shape[1], uncond_idx.shape[1] if uncond_idx is not None else 0)
    if longest + max_new_tokens - 1 > bs:
        raise ValueError(
            f"prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds block_size {bs}; "
            "use generate_reference (crops the context) or a shorter prompt"
        )
    dec = IncrementalDecoder(model, idx, uncond_prompt=uncond_idx, cfg_scale=cfg_scale)
    new = dec.sample(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     allowed_ids=allowed_ids, stop_ids=stop_ids, generator=generator)
    return torch.cat([idx, new], dim=1)
