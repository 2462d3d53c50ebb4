"""Text side of CLIP: prompt templates, truncated encoding and a per-prompt embedding cache.

Prompts are encoded only up to the batch's longest prompt: with a causal text transformer the
end-of-text embedding does not depend on the padding after it, so slicing the positional
embedding and the attention mask to that length gives the same embedding as padding to the full
context, for a fraction of the cost.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mmmask.data.vocab import Vocabulary

__all__ = ["PROMPT_TEMPLATES", "TextEncoder", "synonym_index"]

PROMPT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": ("{}",),
    "shapes": ("{}", "a {}", "a photo of a {}", "a picture of a {}"),
    # ViLD-style ensemble for real photographs.
    "imagenet": (
        "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
        "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
        "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
        "This is a photo of a medium {}.", "This is a photo of a large {}.",
        "There is a small {} in the scene.", "There is a medium {} in the scene.",
        "There is a large {} in the scene.",
    ),
}


def synonym_index(vocab: Vocabulary) -> torch.Tensor:
    """LongTensor[S]: the class of each synonym, in ``vocab`` order (S = all synonyms)."""
    return torch.tensor([i for i, syns in enumerate(vocab.classes) for _ in syns], dtype=torch.long)


class TextEncoder:
    """Encodes prompts with an open_clip model's text tower; caches embeddings per prompt.

    ``encode_vocabulary(vocab) -> Tensor[S, D]``: one L2-normalised embedding per synonym (the mean
    over templates, re-normalised). Class scores take the max over a class's synonyms
    (:func:`mmmask.modeling.postprocess.max_over_synonyms`).
    """

    def __init__(self, clip_model: nn.Module, tokenizer, templates: tuple[str, ...],
                 cache_size: int = 4096, batch_size: int = 256):
        self.clip = clip_model  # shared with the backbone, which owns its weights
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.cache_size = int(cache_size)
        self.batch_size = int(batch_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- low level ---------------------------------------------------------------------------
    def _parts(self):
        m = self.clip
        if hasattr(m, "text") and isinstance(m.text, nn.Module):  # CustomTextCLIP
            t = m.text
            return (t.token_embedding, t.positional_embedding, t.transformer, t.ln_final,
                    t.text_projection, t.attn_mask, getattr(t, "pool_type", "argmax"))
        return (m.token_embedding, m.positional_embedding, m.transformer, m.ln_final,
                m.text_projection, m.attn_mask, getattr(m, "text_pool_type", "argmax"))

    def encode_tokens(self, tokens: torch.LongTensor, truncate: bool = True) -> torch.Tensor:
        """Tensor[N, L] token ids -> Tensor[N, D] unnormalised embeddings.

        With ``truncate`` the sequence is cut after the longest prompt's end token.
        """
        emb, pos, transformer, ln_final, proj, attn_mask, pool = self._parts()
        if pool != "argmax":  # pooling on a fixed position needs the full context
            truncate = False
        if truncate:
            nonpad = (tokens != 0).sum(dim=1)
            length = int(nonpad.max().item()) if tokens.numel() else 1
            tokens = tokens[:, : max(length, 1)]
        n_ctx = tokens.shape[1]
        x = emb(tokens) + pos[:n_ctx]  # (N, L, W)
        mask = attn_mask[:n_ctx, :n_ctx] if attn_mask is not None else None
        x = transformer(x, attn_mask=mask)
        x = ln_final(x)
        eot = tokens.argmax(dim=-1)  # end-of-text has the largest id
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # (N, W)
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Tensor[N, D] L2-normalised embeddings of ``prompts``, from the cache where possible."""
        device = next(self.clip.parameters()).device
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        self.cache_hits += len(prompts) - len(todo)
        self.cache_misses += len(todo)
        fresh: dict[str, torch.Tensor] = {}
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            tokens = self.tokenizer(chunk).to(device)
            out = F.normalize(self.encode_tokens(tokens).float(), dim=-1)
            fresh.update(zip(chunk, out))
        for p, e in fresh.items():
            if self.cache_size > 0:
                self._cache[p] = e
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack([fresh[p] if p in fresh else self._cache[p] for p in prompts])

    @torch.no_grad()
    def encode_vocabulary(self, vocab: Vocabulary) -> torch.Tensor:
        """Tensor[S, D]: per synonym, the normalised mean over prompt templates."""
        names = [s for syns in vocab.classes for s in syns]
        prompts = [t.format(n) for n in names for t in self.templates]
        emb = self.encode_prompts(prompts).view(len(names), len(self.templates), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)
