"""Text side of CLIP: prompt templates, truncated encoding and a per-prompt embedding cache.

Prompts are encoded only up to the batch's longest prompt: with a causal text transformer the
end-of-text embedding does not depend on the padding after it, so slicing the positional
embedding and the attention mask to that length gives the same embedding as padding to the full
context, for a fraction of the cost.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mmmask.data.vocab import Vocabulary

__all__ = ["PROMPT_TEMPLATES", "TextEncoder", "TextTower", "encode_text_tokens",
           "synonym_index"]

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


def encode_text_tokens(parts: tuple, tokens: torch.LongTensor,
                       truncate: bool = True) -> torch.Tensor:
    """Tensor[N, L] token ids -> Tensor[N, D] unnormalised embeddings through a text tower's
    ``parts`` (token embedding, positional embedding, transformer, final norm, projection,
    causal mask, pooling). With ``truncate`` the sequence is cut after the longest prompt's end
    token (exact for the causal, end-token-pooled towers of CLIP)."""
    emb, pos, transformer, ln_final, proj, attn_mask, pool = parts
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


def _template_mean(per_prompt: torch.Tensor, num_names: int) -> torch.Tensor:
    """Tensor[S*T, D] prompt embeddings (the T templates of each name together) -> Tensor[S, D]:
    per name, the normalised mean over its templates."""
    return F.normalize(per_prompt.view(num_names, -1, per_prompt.shape[-1]).mean(dim=1), dim=-1)


def _synonyms(vocab: Vocabulary) -> tuple[str, ...]:
    return tuple(s for syns in vocab.classes for s in syns)


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
        return encode_text_tokens(self._parts(), tokens, truncate)

    def token_batches(self, prompts: list[str], device) -> list[torch.LongTensor]:
        """``prompts`` tokenized in batches of at most ``batch_size``."""
        return [self.tokenizer(prompts[i : i + self.batch_size]).to(device)
                for i in range(0, len(prompts), self.batch_size)]

    def encode_texts(self, texts: list[str], parts: tuple | None = None) -> torch.Tensor:
        """Tensor[N, D] normalised embeddings of ``texts`` (no templates, no cache) through
        ``parts`` (default: this encoder's text tower; e.g. a :class:`TextTower`'s), with
        gradients when grad mode is on."""
        device = next(self.clip.parameters()).device
        encode = self.encode_tokens if parts is None else (lambda t: encode_text_tokens(parts, t))
        out = [F.normalize(encode(t).float(), dim=-1)
               for t in self.token_batches(list(texts), device)]
        return torch.cat(out) if out else torch.zeros(0, device=device)

    def vocabulary_prompts(self, vocab: Vocabulary) -> list[str]:
        """Every template applied to every synonym of ``vocab`` (templates innermost)."""
        return [t.format(n) for n in _synonyms(vocab) for t in self.templates]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Tensor[N, D] L2-normalised embeddings of ``prompts``, from the cache where possible."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        self.cache_hits += len(prompts) - len(todo)
        self.cache_misses += len(todo)
        fresh: dict[str, torch.Tensor] = dict(zip(todo, self.encode_texts(todo)))
        for p, e in fresh.items():
            if self.cache_size > 0:
                self._cache[p] = e
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack([fresh[p] if p in fresh else self._cache[p] for p in prompts])

    @torch.no_grad()
    def encode_vocabulary(self, vocab: Vocabulary) -> torch.Tensor:
        """Tensor[S, D]: per synonym, the normalised mean over prompt templates."""
        return _template_mean(self.encode_prompts(self.vocabulary_prompts(vocab)),
                              len(_synonyms(vocab)))


class TextTower(nn.Module):
    """A trainable copy of CLIP's text transformer, e.g. for the crop classifier to fine-tune its
    class names on the seen classes while the backbone's text tower stays frozen.

    The copy holds the positional embedding, the transformer, the final norm and the
    projection; the token embedding table (most of a CLIP text tower's weights) is shared with
    the frozen ``encoder`` and neither trained nor saved. ``encode_vocabulary(vocab)`` gives one
    normalised embedding per synonym (mean over ``encoder``'s prompt templates), with gradients
    in training and from a per-vocabulary cache otherwise.
    """

    def __init__(self, encoder: TextEncoder, cache_size: int = 8) -> None:
        super().__init__()
        emb, pos, transformer, ln_final, proj, attn_mask, pool = encoder._parts()
        self._frozen = (encoder,)  # a tuple: the encoder's modules stay out of this state dict
        self.positional_embedding = nn.Parameter(pos.detach().clone())
        self.transformer = copy.deepcopy(transformer)
        self.ln_final = copy.deepcopy(ln_final)
        if isinstance(proj, nn.Module):
            self.text_projection = copy.deepcopy(proj)
        else:
            self.text_projection = None if proj is None else nn.Parameter(proj.detach().clone())
        mask = None if attn_mask is None else attn_mask.detach().clone()
        self.register_buffer("attn_mask", mask, persistent=False)
        self.pool = pool
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._tokens: tuple[tuple, list] = ((), [])  # last (names, device), token batches
        self.register_load_state_dict_post_hook(lambda module, _: module.clear_cache())

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def copy_from_encoder(self) -> None:
        """Reset the copy to the frozen encoder's current text tower (e.g. after the backbone's
        weights were loaded)."""
        _, pos, transformer, ln_final, proj, _, _ = self._frozen[0]._parts()
        self.positional_embedding.copy_(pos)
        self.transformer.load_state_dict(transformer.state_dict())
        self.ln_final.load_state_dict(ln_final.state_dict())
        if isinstance(proj, nn.Module):
            self.text_projection.load_state_dict(proj.state_dict())
        elif proj is not None:
            self.text_projection.copy_(proj)
        self.clear_cache()

    def train(self, mode: bool = True) -> "TextTower":
        self.clear_cache()  # embeddings cached before training would be stale after it
        return super().train(mode)

    def _parts(self) -> tuple:
        token_embedding = self._frozen[0]._parts()[0]
        return (token_embedding, self.positional_embedding, self.transformer, self.ln_final,
                self.text_projection, self.attn_mask, self.pool)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Tensor[N, D] normalised embeddings of free ``texts`` (e.g. captions, no templates),
        with gradients when grad mode is on."""
        return self._frozen[0].encode_texts(texts, self._parts())

    def encode_vocabulary(self, vocab: Vocabulary) -> torch.Tensor:
        """Tensor[S, D]: per synonym of ``vocab``, the normalised mean over prompt templates."""
        names = _synonyms(vocab)
        grad = self.training and torch.is_grad_enabled()
        if not grad and names in self._cache:
            self._cache.move_to_end(names)
            return self._cache[names]
        encoder, device = self._frozen[0], self.positional_embedding.device
        if self._tokens[0] != (names, device):  # training re-encodes one vocabulary every step
            self._tokens = ((names, device),
                            encoder.token_batches(encoder.vocabulary_prompts(vocab), device))
        parts = self._parts()
        with torch.set_grad_enabled(grad):
            out = [F.normalize(encode_text_tokens(parts, t).float(), dim=-1)
                   for t in self._tokens[1]]
            emb = _template_mean(torch.cat(out), len(names))
        if not grad and self.cache_size > 0:
            self._cache[names] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb
