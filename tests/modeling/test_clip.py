"""CLIP backbone: shapes for ConvNeXt and ViT trunks, truncated text encoding, the text cache,
local weight files and the offline message for network tags."""

import logging

import open_clip
import pytest
import torch

from mmmask.data.vocab import parse_vocab
from mmmask.modeling.clip import CLIPBackbone, create_clip
from mmmask.modeling.clip.pretrain import CLIPPretrainer, contrastive_loss
from mmmask.utils.weights import save_safetensors

NAMES = ["mmmask-shapes-convnext", "mmmask-shapes-vit"]


@pytest.fixture(scope="module", params=NAMES)
def backbone(request):
    return CLIPBackbone(model_name=request.param)


def test_feature_shapes(backbone):
    x = torch.randn(2, 3, 96, 128)
    feats = backbone(x)
    shape = backbone.output_shape()
    for name, nominal in (("res2", 4), ("res3", 8), ("res4", 16), ("res5", 32)):
        channels, stride = shape[name]
        assert stride in (nominal, nominal // 2)  # the last stage may be dilated (stride 16)
        assert feats[name].shape == (2, channels, 96 // stride, 128 // stride)
    dense = feats["clip_dense"]
    assert dense.shape[:2] == (2, backbone.dense_dim)
    pooled = dense.mean(dim=(2, 3))
    assert backbone.dense_to_embedding(pooled).shape == (2, backbone.embed_dim)


def test_dense_head_matches_clip_image_embedding_for_convnext():
    b = CLIPBackbone(model_name="mmmask-shapes-convnext")
    x = torch.randn(2, 3, 64, 64)
    pooled = b(x)["clip_dense"].mean(dim=(2, 3))
    ref = b.clip.encode_image(x)
    assert torch.allclose(b.dense_to_embedding(pooled), ref, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_dense_input_scale_gives_a_finer_dense_map_only(name):
    base = CLIPBackbone(model_name=name)
    fine = CLIPBackbone(model_name=name, dense_input_scale=2.0)
    fine.load_state_dict(base.state_dict())
    x = torch.randn(1, 3, 64, 96)
    a, b = base(x), fine(x)
    for k in ("res2", "res3", "res4", "res5"):  # the generator's features are untouched
        assert torch.equal(a[k], b[k])
    h, w = a["clip_dense"].shape[-2:]
    assert b["clip_dense"].shape[-2:] == (2 * h, 2 * w)
    up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(b["clip_dense"], base(up)["clip_dense"], atol=1e-5)
    with pytest.raises(ValueError, match="DENSE_INPUT_SCALE"):
        CLIPBackbone(model_name=name, dense_input_scale=0.0)


def test_backbone_is_frozen(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.clip.training


def test_truncated_text_equals_full_context(backbone):
    tok = backbone.text.tokenizer(["a red star", "a photo of a blue ring on green grass"])
    full = backbone.text.encode_tokens(tok, truncate=False)
    short = backbone.text.encode_tokens(tok, truncate=True)
    assert torch.allclose(full, short, atol=1e-5)
    assert torch.allclose(full, backbone.clip.encode_text(tok), atol=1e-5)


def test_vocabulary_embeddings_and_cache(backbone):
    backbone.text.clear_cache()
    vocab = parse_vocab("red star|red thing,blue ring,sky")
    emb = backbone.encode_vocabulary(vocab)
    assert emb.shape == (4, backbone.embed_dim)  # one row per synonym
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    misses = backbone.text.cache_misses
    again = backbone.encode_vocabulary(vocab)
    assert backbone.text.cache_misses == misses  # re-typing the vocabulary costs nothing
    assert backbone.text.cache_hits > 0
    assert torch.equal(emb, again)


def test_local_weight_file_round_trip(tmp_path):
    model, _, _ = create_clip("mmmask-shapes-convnext")
    path = tmp_path / "clip.safetensors"
    save_safetensors({f"clip.{k}": v for k, v in model.state_dict().items()}, str(path))
    again, _, _ = create_clip("mmmask-shapes-convnext", str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_clip_taken_from_a_whole_segmentors_weights(tmp_path):
    model, _, _ = create_clip("mmmask-shapes-convnext")
    other = torch.nn.Linear(3, 2)
    state = {f"backbone.clip.{k}": v for k, v in model.state_dict().items()}
    state.update({f"mask_generator.{k}": v for k, v in other.state_dict().items()})
    path = tmp_path / "segmentor.safetensors"
    save_safetensors(state, str(path))
    again, _, _ = create_clip("mmmask-shapes-convnext", str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # a segmentor file without a CLIP of this architecture still fails as before
    save_safetensors({f"backbone.clip.{k}": v for k, v in create_clip("mmmask-shapes-vit")[0]
                      .state_dict().items()}, str(path))
    with pytest.raises(ValueError):
        create_clip("mmmask-shapes-convnext", str(path))


def test_wrong_architecture_weights_fail_clearly(tmp_path):
    model, _, _ = create_clip("mmmask-shapes-vit")
    path = tmp_path / "vit.safetensors"
    save_safetensors(model.state_dict(), str(path))
    with pytest.raises(ValueError, match="do not match|does not fit"):
        create_clip("mmmask-shapes-convnext", str(path))


def test_missing_file_and_offline_tag_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.CLIP.PRETRAINED"):
        create_clip("mmmask-shapes-convnext", str(tmp_path / "none.safetensors"))
    with pytest.raises(KeyError, match="valid tags"):
        create_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(KeyError, match="Unknown CLIP model"):
        create_clip("ViT-B-33")


def test_network_tag_offline_names_config_key(monkeypatch):
    import open_clip

    def offline(*a, **k):
        if k.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return open_clip.factory.create_model.__wrapped__(*a, **k)

    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: offline(*a, **k))
    with pytest.raises(RuntimeError, match="MODEL.CLIP.PRETRAINED"):
        create_clip("ViT-B-32", "openai")


def test_contrastive_pretraining_lowers_loss():
    torch.manual_seed(0)
    m = CLIPPretrainer(model_name="mmmask-shapes-convnext").train()
    colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (240, 240, 30)]
    names = ["red", "blue", "green", "yellow"]
    batch = [{"image": torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32).clone(),
              "caption": f"a {n} square"} for c, n in zip(colours, names)]
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = m(batch)["loss_clip"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_duplicate_captions_are_soft_positives():
    img = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    loss_dup = contrastive_loss(img, img, torch.tensor(10.0), ["a", "a", "b"])
    loss_plain = contrastive_loss(img, img, torch.tensor(10.0))
    assert torch.isfinite(loss_dup) and torch.isfinite(loss_plain)


def test_no_random_init_warning_when_mmmask_loads_the_weights(tmp_path, caplog):
    model, _, _ = create_clip("mmmask-shapes-convnext")
    path = tmp_path / "clip.safetensors"
    save_safetensors(model.state_dict(), str(path))
    with caplog.at_level(logging.WARNING):
        create_clip("mmmask-shapes-convnext", str(path))
        create_clip("mmmask-shapes-convnext", "")
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    # the filter is gone afterwards: open_clip's own warning still reaches a direct caller
    with caplog.at_level(logging.WARNING):
        open_clip.create_model("mmmask-shapes-convnext", pretrained=None)
    assert [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_text_tower_copy_starts_equal_trains_and_caches(backbone):
    from mmmask.modeling.clip import TextTower

    vocab = parse_vocab("red star|red thing,blue ring,sky")
    tower = TextTower(backbone.text).eval()
    frozen = backbone.encode_vocabulary(vocab)
    assert torch.allclose(tower.encode_vocabulary(vocab), frozen, atol=1e-5)
    # the shared token table is neither a parameter nor saved: only the small transformer copy
    assert not any("token_embedding" in k for k in tower.state_dict())
    table = backbone.text._parts()[0].weight.numel()
    assert sum(p.numel() for p in tower.parameters()) < table
    cached = tower.encode_vocabulary(vocab)
    assert tower.encode_vocabulary(vocab) is cached  # re-typing the vocabulary costs nothing
    # training: gradients reach the copy, never the frozen backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    tower.train()
    opt = torch.optim.Adam(tower.parameters(), lr=1e-3)
    for _ in range(5):
        emb = tower.encode_vocabulary(vocab)
        loss = emb[0] @ emb[2]  # push "red star" away from "blue ring"
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in backbone.parameters())
    moved = tower.eval().encode_vocabulary(vocab)
    assert not moved.requires_grad
    assert moved[0] @ moved[2] < frozen[0] @ frozen[2] - 0.01  # trained, not from the cache
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    backbone.text.clear_cache()  # re-encoded by the backbone itself, not read from its cache
    assert torch.equal(backbone.encode_vocabulary(vocab), frozen)
    # reset to the encoder's weights (what a checkpoint without the copy gets)
    tower.copy_from_encoder()
    assert torch.allclose(tower.encode_vocabulary(vocab), frozen, atol=1e-5)
