"""The CM3 causal-masking transform, as pure seeded functions.

A document ``x`` of length ``L`` becomes (CM3 paper, section 2)::

    x[:s0] <mask:0> x[e0:s1] <mask:1> ... x[e_{n-1}:]  <mask:0> x[s0:e0] <mask:1> x[s1:e1] ... <eos>

with ``n ~ Poisson(lambda)`` clamped to ``[min_spans, max_spans]`` disjoint, sorted spans whose
``2n`` boundaries are drawn uniformly (without replacement) over the sequence. A left-to-right model
trained on the result learns plain generation (the unmasked part) and infilling with context on
both sides (the appended spans). ``n = 0`` (``causal_only``) gives ``x <eos>``: causal language
modelling, the baseline.

Loss weights are aligned with the output tokens (weight of *predicting* that token from its prefix):
every sentinel token gets weight 0 (the placeholders are unpredictable and the sentinels that open
the appended spans are implied by the format); all other tokens, ``<eos>`` included, weight 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["sample_spans", "apply_spans", "cm3_mask", "cm3_unmask"]

Spans = list[tuple[int, int]]


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def sample_spans(length: int, rng: np.random.Generator | int | None, *,
                 poisson_lambda: float = 1.0, max_spans: int = 3, min_spans: int = 1,
                 start: int = 0) -> Spans:
    """Sorted, disjoint, non-empty ``[s, e)`` spans inside ``[start, length)``.

    ``n ~ Poisson(poisson_lambda)`` is clamped to ``[min_spans, max_spans]`` and to what fits
    (``2n`` distinct boundaries among the ``length - start + 1`` positions). Two spans never touch:
    at least one kept token lies between them.
    """
    if max_spans < 0 or min_spans < 0 or min_spans > max_spans:
        raise ValueError(f"Need 0 <= min_spans <= max_spans; got {min_spans}, {max_spans}")
    if poisson_lambda < 0:
        raise ValueError(f"poisson_lambda must be >= 0; got {poisson_lambda}")
    gen = _as_rng(rng)
    n = int(gen.poisson(poisson_lambda)) if max_spans > 0 else 0
    n = min(max(n, min_spans), max_spans)
    positions = max(length - start + 1, 0)
    n = min(n, positions // 2)
    if n == 0:
        return []
    bounds = np.sort(gen.choice(positions, size=2 * n, replace=False)) + start
    return [(int(bounds[2 * i]), int(bounds[2 * i + 1])) for i in range(n)]


def apply_spans(tokens: Sequence[int], spans: Spans, *, sentinel_ids: Sequence[int],
                eos_id: int) -> tuple[list[int], list[float]]:
    """Cut ``spans`` out of ``tokens`` and append them after sentinels (see module docstring).

    Returns ``(ids, loss_weights)`` of length ``len(tokens) + 2 * len(spans) + 1``.
    """
    if len(spans) > len(sentinel_ids):
        raise ValueError(f"{len(spans)} spans but only {len(sentinel_ids)} sentinels")
    sentinels = set(int(s) for s in sentinel_ids)
    if any(int(t) in sentinels for t in tokens):
        raise ValueError("The document already contains sentinel tokens; cannot mask it.")
    prev = 0
    for s, e in spans:
        if not prev <= s < e <= len(tokens):
            raise ValueError(f"Spans must be sorted, disjoint, non-empty and in range; got {spans}")
        prev = e
    head: list[int] = []
    tail: list[int] = []
    cursor = 0
    for i, (s, e) in enumerate(spans):
        head.extend(tokens[cursor:s])
        head.append(int(sentinel_ids[i]))
        tail.append(int(sentinel_ids[i]))
        tail.extend(tokens[s:e])
        cursor = e
    head.extend(tokens[cursor:])
    ids = [int(t) for t in head + tail] + [int(eos_id)]
    weights = [0.0 if t in sentinels else 1.0 for t in ids]
    return ids, weights


def cm3_mask(tokens: Sequence[int] | torch.Tensor, rng: np.random.Generator | int | None, *,
             sentinel_ids: Sequence[int], eos_id: int, poisson_lambda: float = 1.0,
             max_spans: int = 3, min_spans: int = 1, start: int = 0, causal_only: bool = False
             ) -> tuple[list[int], list[float]] | tuple[torch.Tensor, torch.Tensor]:
    """The CM3 transform of one document (1-D ids, no ``<eos>``).

    Args:
        tokens: the document's ids (list or 1-D LongTensor).
        rng: a numpy Generator or a seed; the output is a pure function of it and the inputs.
        sentinel_ids: ids of ``<mask:0>, <mask:1>, ...`` (at least ``max_spans`` of them).
        eos_id: the id closing the sequence.
        poisson_lambda, max_spans, min_spans: number of spans ``n ~ Poisson`` clamped.
        start: spans never cover ``tokens[:start]`` (e.g. 1 keeps ``<bos>`` in place).
        causal_only: ``n = 0`` always (returns ``tokens + [eos]``).

    Returns:
        ``(ids, loss_weights)``: lists, or (LongTensor[L'], FloatTensor[L']) for tensor input,
        with ``L' = len(tokens) + 2n + 1``.
    """
    as_tensor = isinstance(tokens, torch.Tensor)
    toks = tokens.reshape(-1).tolist() if as_tensor else [int(t) for t in tokens]
    if causal_only:
        spans: Spans = []
    else:
        spans = sample_spans(len(toks), rng, poisson_lambda=poisson_lambda, max_spans=max_spans,
                             min_spans=min_spans, start=start)
    ids, weights = apply_spans(toks, spans, sentinel_ids=sentinel_ids, eos_id=eos_id)
    if as_tensor:
        return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)
    return ids, weights


def cm3_unmask(masked: Sequence[int] | torch.Tensor, *, sentinel_ids: Sequence[int],
               eos_id: int) -> list[int]:
    """Invert :func:`cm3_mask`: the original document from a masked sequence (ending in eos)."""
    ids = masked.reshape(-1).tolist() if isinstance(masked, torch.Tensor) else list(masked)
    if not ids or ids[-1] != eos_id:
        raise ValueError("A CM3 sequence ends with <eos>.")
    ids = ids[:-1]
    index = {int(s): i for i, s in enumerate(sentinel_ids)}
    first = int(sentinel_ids[0])
    seen = [p for p, t in enumerate(ids) if t == first]
    if not seen:  # no spans: causal document
        return ids
    if len(seen) != 2:
        raise ValueError("Malformed CM3 sequence: <mask:0> must appear exactly twice.")
    doc, tail = ids[: seen[1]], ids[seen[1]:]
    spans: dict[int, list[int]] = {}
    current = -1
    for t in tail:
        if t in index:
            current = index[t]
            spans[current] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in doc:
        if t in index:
            if index[t] not in spans:
                raise ValueError(f"Malformed CM3 sequence: no span for sentinel {index[t]}.")
            out.extend(spans[index[t]])
        else:
            out.append(t)
    return out
