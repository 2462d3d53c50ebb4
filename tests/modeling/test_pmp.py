"""PMP mask generator on fake backbone features (no CLIP needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmmask.config import get_cfg
from mmmask.modeling.mask_generators import MaskProposals, PMPMaskGenerator, pad_target_masks
from mmmask.registry import MASK_GENERATOR_REGISTRY



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run far faster on one intra-op thread, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


INPUT_SHAPE = {"res2": (16, 4), "res3": (24, 8), "res4": (32, 16), "res5": (40, 32)}
EMBED_DIM = 24


def _cfg(text_cross_attn: bool = True, **overrides):
    cfg = get_cfg()
    p = cfg.MODEL.PMP
    p.NUM_QUERIES, p.HIDDEN_DIM, p.MASK_DIM, p.NHEADS = 10, 32, 32, 4
    p.DIM_FEEDFORWARD, p.DEC_LAYERS, p.TRAIN_NUM_POINTS = 64, 3, 64
    p.TEXT_CROSS_ATTN = text_cross_attn
    for k, v in overrides.items():
        p[k] = v
    return cfg


def _build(text_cross_attn: bool = True, **overrides) -> PMPMaskGenerator:
    cls = MASK_GENERATOR_REGISTRY.get("PMP")
    # extra backbone outputs (the dense CLIP map) are ignored
    shape = {**INPUT_SHAPE, "clip_dense": (40, 32)}
    return cls(_cfg(text_cross_attn, **overrides), input_shape=shape, embed_dim=EMBED_DIM)


def _features(batch: int = 2, size: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, c, size // s, size // s, generator=g)
        for k, (c, s) in INPUT_SHAPE.items()
    }


def _text(num_classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_classes, EMBED_DIM, generator=g), dim=-1)


@pytest.mark.parametrize("text_cross_attn", [True, False])
def test_forward_shapes_with_changing_vocabulary(text_cross_attn):
    torch.manual_seed(0)
    gen = _build(text_cross_attn).eval()
    feats = _features()
    for c in (7, 3, 12):
        with torch.no_grad():
            out = gen(feats, _text(c))
        assert isinstance(out, MaskProposals)
        assert out.pred_masks.shape == (2, 10, 16, 16)
        assert out.pred_logits.shape == (2, 10, c + 1)
        assert out.query_embed.shape == (2, 10, EMBED_DIM)
        assert out.num_classes == c
        assert torch.allclose(out.query_embed.norm(dim=-1), torch.ones(2, 10), atol=1e-5)
        assert len(out.aux) == 3  # initial queries + first 2 layers; the 3rd is the final
        for aux in out.aux:
            assert aux["pred_masks"].shape == out.pred_masks.shape
            assert aux["pred_logits"].shape == out.pred_logits.shape
        assert all(torch.isfinite(t).all() for t in (out.pred_masks, out.pred_logits))


def test_text_cross_attention_makes_masks_follow_the_vocabulary():
    torch.manual_seed(0)
    feats = _features()
    on = _build(True).eval()
    with torch.no_grad():
        a, b = on(feats, _text(7, seed=1)), on(feats, _text(7, seed=2))
    assert not torch.allclose(a.pred_masks, b.pred_masks, atol=1e-4)
    assert not torch.allclose(a.query_embed, b.query_embed, atol=1e-4)

    off = _build(False).eval()
    assert not [n for n, _ in off.named_parameters() if "text" in n]
    assert [n for n, _ in on.named_parameters() if "text" in n]
    with torch.no_grad():
        a, b = off(feats, _text(7, seed=1)), off(feats, _text(5, seed=2))
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert torch.equal(a.query_embed, b.query_embed)
    assert a.pred_logits.shape[-1] == 8 and b.pred_logits.shape[-1] == 6


def _synthetic_targets(size: int = 32):
    """Two images, squares of known classes (ids index a 5-class vocabulary)."""
    t = []
    for boxes, classes in (([(2, 2, 14, 14), (16, 18, 30, 30)], [1, 3]), ([(4, 16, 20, 30)], [0])):
        masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
        for i, (y0, x0, y1, x1) in enumerate(boxes):
            masks[i, y0:y1, x0:x1] = True
        is_thing = torch.ones(len(boxes), dtype=torch.bool)
        t.append({"masks": masks, "classes": torch.tensor(classes), "is_thing": is_thing})
    return t


def test_losses_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    gen = _build(True).train()
    text = _text(5)
    out = gen(_features(size=32), text)
    losses = gen.losses(out, _synthetic_targets(), text)
    names = ("loss_ce", "loss_mask", "loss_dice")
    expected = {f"{k}{s}" for k in names for s in ("", "_0", "_1", "_2")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(gen.named_parameters())
    no_grad = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    zero = [n for n, p in gen.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_deep_supervision_off_and_wrong_vocabulary():
    gen = _build(True, DEEP_SUPERVISION=False)
    text = _text(5)
    out = gen(_features(size=32), text)
    assert set(gen.losses(out, _synthetic_targets(), text)) == {"loss_ce", "loss_mask", "loss_dice"}
    with pytest.raises(ValueError, match="classes"):
        gen.losses(out, _synthetic_targets(), _text(4))


def test_optimisation_lowers_the_loss():
    torch.manual_seed(0)
    gen = _build(True, TRAIN_NUM_POINTS=0).train()
    feats, text, targets = _features(size=32), _text(5), _synthetic_targets()
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        losses = gen.losses(gen(feats, text), targets, text)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert sum(history[-3:]) / 3 < 0.6 * sum(history[:3]) / 3, history


def test_input_validation():
    gen = _build(True)
    feats = _features(size=32)
    with pytest.raises(ValueError, match="text_emb"):
        gen(feats, torch.zeros(3, EMBED_DIM + 1))
    with pytest.raises(ValueError, match="text_emb"):
        gen(feats, torch.zeros(0, EMBED_DIM))
    with pytest.raises(KeyError, match="res3"):
        gen({k: v for k, v in feats.items() if k != "res3"}, _text(3))
    with pytest.raises(KeyError, match="available"):
        PMPMaskGenerator(input_shape={"res2": (8, 4)}, embed_dim=8, in_features=["res2", "res9"])
    out = gen(feats, _text(5))
    too_big = [{"masks": torch.ones(1, 40, 40, dtype=torch.bool), "classes": torch.tensor([0])}] * 2
    with pytest.raises(ValueError, match="larger"):
        gen.losses(out, too_big)


def test_pad_target_masks_and_smaller_targets():
    m = torch.ones(2, 3, 5, dtype=torch.bool)
    p = pad_target_masks(m, (4, 8))
    assert p.shape == (2, 4, 8) and p.dtype == torch.bool and p.sum() == 30 and p[:, :3, :5].all()
    gen = _build(True)
    text = _text(5)
    out = gen(_features(size=32), text)  # predictions cover 32x32; targets of a 28x30 image
    small = [
        {"masks": t["masks"][:, :28, :30], "classes": t["classes"]} for t in _synthetic_targets()
    ]
    assert all(torch.isfinite(v) for v in gen.losses(out, small, text).values())


def test_empty_attention_rows_attend_everywhere():
    gen = _build(True)
    dec = gen.query_decoder
    with torch.no_grad():
        last = dec.mask_embed.layers[-1]
        last.weight.zero_()
        last.bias.fill_(1.0)
    mask_features = -torch.ones(2, 32, 8, 8)  # every mask logit is -32: every row empty
    _, attn = dec.predict(torch.randn(2, 10, 32), mask_features, _text(3), (4, 4))
    assert attn.shape == (2 * 4, 10, 16) and not attn.any()
    mask_features[:, :, :4] = 1.0  # top half positive: only the bottom half is masked out
    _, attn = dec.predict(torch.randn(2, 10, 32), mask_features, _text(3), (4, 4))
    assert attn.view(8, 10, 4, 4)[:, :, 2:].all() and not attn.view(8, 10, 4, 4)[:, :, :2].any()


def test_keyword_construction_without_cfg():
    gen = PMPMaskGenerator(
        input_shape=INPUT_SHAPE, embed_dim=EMBED_DIM, num_queries=4, hidden_dim=16, mask_dim=8,
        nheads=2, dim_feedforward=16, dec_layers=1, train_num_points=16,
    )
    out = gen(_features(batch=1), _text(2))
    assert out.pred_logits.shape == (1, 4, 3) and out.pred_masks.shape == (1, 4, 16, 16)
