import pytest
import torch

from mmmask.cm3.generate import (
    IncrementalDecoder, cfg_logits, generate, generate_reference, sample_next,
)
from mmmask.cm3.model import CM3, CM3Config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = CM3Config(vocab_size=61, block_size=48, n_layer=2, n_head=2, n_embd=32)
    return CM3(cfg).eval()


def test_forward_shapes_and_loss(model):
    idx = torch.randint(0, 61, (2, 10))
    logits, loss = model(idx)
    assert logits.shape == (2, 1, 61) and loss is None
    full, _ = model(idx, full_logits=True)
    assert torch.allclose(full[:, -1:], logits, atol=1e-5)
    tgt = torch.randint(0, 61, (2, 10))
    logits, loss = model(idx, targets=tgt)
    assert logits.shape == (2, 10, 61) and loss.ndim == 0
    # zero weights on half the targets = ignoring them
    w = torch.ones(2, 10)
    w[:, 5:] = 0
    t2 = tgt.clone()
    t2[:, 5:] = -1
    assert torch.allclose(model(idx, tgt, loss_weights=w)[1], model(idx, t2)[1], atol=1e-6)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.full((1, 3), 61))


def test_cache_chunks_match_full_forward(model):
    idx = torch.randint(0, 61, (2, 20))
    full, _ = model(idx, full_logits=True)
    cache = model.new_cache(2)
    a, _ = model(idx[:, :7], kv_cache=cache, full_logits=True)
    b, _ = model(idx[:, 7:8], kv_cache=cache)
    c, _ = model(idx[:, 8:], kv_cache=cache, full_logits=True)
    assert cache.length == 20
    got = torch.cat([a, b, c], dim=1)
    assert torch.allclose(got, full, atol=1e-5)


def test_kv_cache_generate_equals_reference_greedy(model):
    idx = torch.randint(0, 61, (3, 5))
    ref = generate_reference(model, idx, 40, temperature=0)
    fast = generate(model, idx, 40, temperature=0)
    assert ref.shape == (3, 45)
    assert torch.equal(ref, fast)


@pytest.mark.parametrize("kw", [dict(), dict(top_k=8), dict(top_p=0.8, temperature=0.7)])
def test_kv_cache_generate_equals_reference_sampling(model, kw):
    idx = torch.randint(0, 61, (2, 6))
    ref = generate_reference(model, idx, 30, generator=torch.Generator().manual_seed(7), **kw)
    fast = generate(model, idx, 30, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(ref, fast)


def test_allowed_and_stop_ids(model):
    idx = torch.randint(0, 61, (2, 4))
    allowed = list(range(10, 20))
    out = generate(model, idx, 25, allowed_ids=allowed, generator=torch.Generator().manual_seed(0))
    assert ((out[:, 4:] >= 10) & (out[:, 4:] < 20)).all()
    stop = [10, 11, 12]
    ref = generate_reference(model, idx, 25, allowed_ids=allowed, stop_ids=stop,
                             generator=torch.Generator().manual_seed(1))
    fast = generate(model, idx, 25, allowed_ids=allowed, stop_ids=stop,
                    generator=torch.Generator().manual_seed(1))
    assert torch.equal(ref, fast)
    if ref.shape[1] < 29:  # stopped early: every row holds a stop token
        assert all(any(t in stop for t in row[4:].tolist()) for row in ref)


def test_cfg_scale_one_equals_conditional(model):
    idx = torch.randint(0, 61, (2, 6))
    unc = torch.randint(0, 61, (2, 3))
    cond = generate(model, idx, 20, temperature=0)
    guided = generate(model, idx, 20, temperature=0, uncond_idx=unc, cfg_scale=1.0)
    assert torch.equal(cond, guided)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(generate(model, idx, 20, generator=g1),
                       generate(model, idx, 20, uncond_idx=unc, cfg_scale=1.0, generator=g2))
    # guided sampling: cached == reference
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(
        generate_reference(model, idx, 20, uncond_idx=unc, cfg_scale=4.0, generator=g1),
        generate(model, idx, 20, uncond_idx=unc, cfg_scale=4.0, generator=g2))


def test_cfg_logits_and_greedy():
    c, u = torch.tensor([[1.0, 3.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.allclose(cfg_logits(c, u, 1.0), c)
    assert torch.allclose(cfg_logits(c, u, 0.0), u)
    assert torch.allclose(cfg_logits(c, u, 2.0), torch.tensor([[0.0, 5.0, 0.0]]))
    assert sample_next(c, temperature=0).item() == 1
    allowed = torch.tensor([True, False, True])
    assert sample_next(c, temperature=0, allowed=allowed).item() == 0
    for s in range(20):
        g = torch.Generator().manual_seed(s)
        assert sample_next(c, top_k=1, generator=g).item() == 1
        assert sample_next(c, allowed=allowed, generator=g).item() in (0, 2)


def test_incremental_decoder_forced_tokens_match_reference(model):
    idx = torch.randint(0, 61, (1, 5))
    dec = IncrementalDecoder(model, idx)
    a = dec.sample(4, temperature=0)
    dec.feed(7)  # forced token after a sampled run
    b = dec.sample(3, temperature=0)
    seq = torch.cat([idx, a, torch.tensor([[7]])], dim=1)
    ref = generate_reference(model, seq, 3, temperature=0)[:, seq.shape[1]:]
    assert torch.equal(b, ref)
    with pytest.raises(ValueError):
        generate(model, idx, 60)
