"""The CM3 decoder: a nanoGPT-sized causal transformer with an optional KV cache.

Ordered bottom-up: :class:`LayerNorm`, :class:`CausalSelfAttention`, :class:`MLP`, :class:`Block`,
:class:`CM3Config`, :class:`KVCache`, :class:`CM3`. ``CM3.forward(idx, targets=None, ...)``
returns ``(logits, loss | None)``; without targets only the last position goes through the head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CM3Config", "KVCache", "CM3"]


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; with a cache, new keys/values are written at ``past``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                past: int = 0) -> torch.Tensor:
        """x: Tensor[B, T, C]; cache: (k, v) buffers Tensor[B, nh, max_len, hs]."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            ck, cv = cache
            ck[:, :, past: past + T] = k
            cv[:, :, past: past + T] = v
            k, v = ck[:, :, : past + T], cv[:, :, : past + T]  # (B, nh, past+T, hs)
        drop = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=T > 1)
        elif T == 1:  # one new query attends to every cached key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # a chunk after a prefix: query i sees keys [0, past + i]
            qpos = torch.arange(T, device=x.device)[:, None] + past
            mask = qpos >= torch.arange(past + T, device=x.device)[None, :]  # (T, past+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor, cache=None, past: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, past)
        return x + self.mlp(self.ln_2(x))


@dataclass
class CM3Config:
    """Architecture of a :class:`CM3` decoder."""

    vocab_size: int = 523
    block_size: int = 256  # longest sequence (positions)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True


class KVCache:
    """Per-layer key/value buffers ``Tensor[B, nh, max_len, hs]`` and the filled ``length``."""

    def __init__(self, config: CM3Config, batch_size: int, device: torch.device | str,
                 dtype: torch.dtype, max_len: int | None = None) -> None:
        self.max_len = int(max_len or config.block_size)
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, self.max_len, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0


class CM3(nn.Module):
    """Decoder-only transformer over the CM3 vocabulary (token + learned position embeddings)."""

    def __init__(self, config: CM3Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            wpe=nn.Embedding(c.block_size, c.n_embd),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(c.n_embd, c.n_head, c.dropout, c.bias)
                             for _ in range(c.n_layer)]),
            ln_f=LayerNorm(c.n_embd, c.bias),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences on this model's device."""
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, p.device, p.dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                loss_weights: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                full_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits and the (weighted) loss.

        Args:
            idx: LongTensor[B, T] token ids (continuing ``kv_cache`` when given).
            targets: LongTensor[B, T] next tokens (-1 = ignore); gives the loss.
            loss_weights: FloatTensor[B, T] weight of each target (default 1).
            kv_cache: appended to in place (``length`` advances by T).
            full_logits: logits at every position even without targets.

        Returns:
            ``(logits, loss)``: logits Tensor[B, T, V] with targets or ``full_logits``, else
            Tensor[B, 1, V] (last position only); loss a scalar (weighted mean) or None.
        """
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        limit = kv_cache.max_len if kv_cache is not None else self.config.block_size
        if past + T > min(limit, self.config.block_size):
            raise ValueError(
                f"Sequence of {past + T} tokens exceeds block_size {self.config.block_size}"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"Token ids must lie in [0, {self.config.vocab_size})")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            cache = (kv_cache.k[i], kv_cache.v[i]) if kv_cache is not None else None
            x = block(x, cache, past)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.length = past + T
        if targets is None:
            logits = self.lm_head(x if full_logits else x[:, -1:, :])
            return logits, None
        logits = self.lm_head(x)  # (B, T, V)
        ce = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T),
                             ignore_index=-1, reduction="none")  # (B*T,)
        w = (targets.reshape(-1) >= 0).to(ce.dtype)
        if loss_weights is not None:
            w = w * loss_weights.reshape(-1).to(ce.dtype)
        loss = (ce * w).sum() / w.sum().clamp(min=1.0)
        return logits, loss

    def fsdp_units(self) -> list[nn.Module]:
        """The modules sharded one by one under FSDP (``SOLVER.FSDP``): the blocks."""
        return list(self.transformer.h)

    def num_params(self) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel()

    def config_dict(self) -> dict:
        return asdict(self.config)
