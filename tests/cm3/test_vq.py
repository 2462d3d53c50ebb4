import pytest
import torch

from mmmask.cm3.vq import VQTokenizer, code_perplexity, codebook_usage, psnr
from mmmask.config import get_cfg
from mmmask.registry import GENERATIVE_MODEL_REGISTRY, META_ARCH_REGISTRY


def _tiny(**kw):
    args = dict(image_size=32, downsample=4, codebook_size=32, codebook_dim=8, hidden_dim=8)
    args.update(kw)
    return VQTokenizer(**args)


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    m = _tiny()
    m.train()
    m.losses(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))  # k-means init
    return m.eval()


def test_encode_decode_shapes_and_range(vq):
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ids = vq.encode(x)
    assert ids.shape == (2, 8, 8) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < 32
    assert torch.equal(ids, vq.encode(x.float() / 255))  # uint8 and [0, 1] float agree
    y = vq.decode(ids)
    assert y.shape == (2, 3, 32, 32) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_round_trip_is_decoder_of_quantized(vq):
    x = torch.rand(2, 3, 32, 32)
    feats = vq.encoder(x * 2 - 1)
    q, ids = vq.quantize(feats)
    assert torch.equal(ids, vq.encode(x))
    assert torch.allclose(q, vq.lookup(ids), atol=1e-5)  # quantize == lookup of its ids
    want = ((vq.decoder(q) + 1) / 2).clamp(0, 1)
    assert torch.allclose(vq.decode(vq.encode(x)), want, atol=1e-5)
    # encode never changes the codebook
    before = vq.quantizer.codebook.clone()
    vq.train()
    vq.encode(x)
    vq.eval()
    assert torch.equal(before, vq.quantizer.codebook)


def test_losses_and_training_lowers_reconstruction():
    torch.manual_seed(1)
    m = _tiny(edge_loss_weight=0.1)
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 8:24, 8:24] = 255  # red squares on black
    x[1:, 2, :, :16] = 200
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = m.losses(x)
        assert set(losses) == {"loss_recon", "loss_commit", "loss_edge"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        first = first if first is not None else float(losses["loss_recon"])
    assert float(m.losses(x)["loss_recon"]) < 0.7 * first


def test_bad_config():
    with pytest.raises(ValueError):
        _tiny(downsample=3)
    with pytest.raises(ValueError):
        _tiny(image_size=30)
    with pytest.raises(ValueError):
        _tiny(recon_loss="l3")
    m = _tiny()
    with pytest.raises(ValueError):
        m.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError):
        m.decode(torch.full((1, 8, 8), 32))


def test_meta_arch_forward_on_batch():
    cfg = get_cfg()
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE, cfg.CM3.VQ.HIDDEN_DIM = 32, 4, 8
    m = META_ARCH_REGISTRY.get("VQTokenizer")(cfg)
    assert GENERATIVE_MODEL_REGISTRY.get("VQTokenizer") is VQTokenizer
    batch = [{"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)} for _ in range(2)]
    m.train()
    losses = m(batch)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    m.eval()
    out = m(batch)
    assert out[0]["reconstruction"].dtype == torch.uint8 and out[0]["codes"].shape == (8, 8)
    with pytest.raises(ValueError):
        m([])


def test_metrics():
    a = torch.rand(2, 3, 8, 8)
    assert float(psnr(a, a)) > 90
    assert abs(float(psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1))) - 20.0) < 1e-4
    ids = torch.tensor([0, 0, 1, 1])
    assert codebook_usage(ids, 8) == 0.25
    assert abs(code_perplexity(ids, 8) - 2.0) < 1e-5
    assert abs(code_perplexity(torch.arange(8), 8) - 8.0) < 1e-4
