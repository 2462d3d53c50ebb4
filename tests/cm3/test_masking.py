import numpy as np
import pytest
import torch

from mmmask.cm3.masking import apply_spans, cm3_mask, cm3_unmask, sample_spans
from mmmask.cm3.tokenizer import Vocab

V = Vocab(num_image_codes=16, num_sentinels=8)
SENT = V.sentinel_ids
EOS = V.eos_id


def _doc(rng, n):
    return [V.bos_id] + rng.integers(0, 256, size=n).tolist()


@pytest.mark.parametrize("max_spans", [1, 3, 5])
def test_transform_invariants_over_many_seeds(max_spans):
    data_rng = np.random.default_rng(0)
    counts = set()
    for seed in range(300):
        doc = _doc(data_rng, int(data_rng.integers(0, 60)))
        spans = sample_spans(len(doc), seed, poisson_lambda=1.5, max_spans=max_spans,
                             min_spans=1, start=1)
        ids, w = cm3_mask(doc, seed, sentinel_ids=SENT, eos_id=EOS, poisson_lambda=1.5,
                          max_spans=max_spans, min_spans=1, start=1)
        n = len(spans)
        counts.add(n)
        # same spans as the pure sampler with the same seed
        assert ids == apply_spans(doc, spans, sentinel_ids=SENT, eos_id=EOS)[0]
        # clamped, disjoint (never touching), sorted, non-empty, <bos> never covered
        assert (1 if len(doc) >= 3 else 0) <= n <= max_spans
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert e0 < s1
        assert all(1 <= s < e <= len(doc) for s, e in spans)
        # layout: length, eos last, order of sentinels, kept tokens in order
        assert len(ids) == len(w) == len(doc) + 2 * n + 1
        assert ids[-1] == EOS and ids[0] == V.bos_id
        sent_pos = [p for p, t in enumerate(ids) if t in SENT]
        assert [ids[p] for p in sent_pos] == SENT[:n] + SENT[:n]
        # loss weight 0 exactly on sentinels
        assert all((wt == 0.0) == (t in SENT) for t, wt in zip(ids, w))
        # recoverable exactly
        assert cm3_unmask(ids, sentinel_ids=SENT, eos_id=EOS) == doc
        # appended spans are the cut-out tokens
        tail = ids[sent_pos[n]:-1] if n else []
        flat = [t for t in tail if t not in SENT]
        assert flat == [t for s, e in spans for t in doc[s:e]]
    assert max(counts) > 1 or max_spans == 1


def test_pure_function_of_seed():
    doc = list(range(40))
    a = cm3_mask(doc, 123, sentinel_ids=SENT, eos_id=EOS)
    b = cm3_mask(doc, np.random.default_rng(123), sentinel_ids=SENT, eos_id=EOS)
    assert a == b
    outs = {tuple(cm3_mask(doc, s, sentinel_ids=SENT, eos_id=EOS)[0]) for s in range(20)}
    assert len(outs) > 10


def test_causal_mode_is_identity_plus_eos():
    doc = list(range(30))
    for seed in range(20):
        ids, w = cm3_mask(doc, seed, sentinel_ids=SENT, eos_id=EOS, causal_only=True)
        assert ids == doc + [EOS] and w == [1.0] * 31
    # max_spans 0 gives the same
    ids, _ = cm3_mask(doc, 0, sentinel_ids=SENT, eos_id=EOS, max_spans=0, min_spans=0)
    assert ids == doc + [EOS]


def test_tensor_input_and_poisson_mean():
    doc = torch.arange(100)
    ids, w = cm3_mask(doc, 5, sentinel_ids=SENT, eos_id=EOS)
    assert ids.dtype == torch.long and w.dtype == torch.float32 and ids.shape == w.shape
    assert cm3_unmask(ids, sentinel_ids=SENT, eos_id=EOS) == doc.tolist()
    ns = [len(sample_spans(100, s, poisson_lambda=1.0, max_spans=50, min_spans=0))
          for s in range(2000)]
    assert abs(np.mean(ns) - 1.0) < 0.1  # n ~ Poisson(1) when not clamped


def test_bad_input():
    with pytest.raises(ValueError):
        apply_spans([1, 2, 3], [(2, 3), (0, 1)], sentinel_ids=SENT, eos_id=EOS)
    with pytest.raises(ValueError):
        cm3_mask([1, SENT[0]], 0, sentinel_ids=SENT, eos_id=EOS)
    with pytest.raises(ValueError):
        sample_spans(10, 0, min_spans=3, max_spans=1)
    with pytest.raises(ValueError):
        cm3_unmask([1, 2], sentinel_ids=SENT, eos_id=EOS)
