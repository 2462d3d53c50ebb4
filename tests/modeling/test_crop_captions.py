"""The crop towers trained on image-caption pairs beside the seen classes' masks
(MODEL.MASK_CROP.CAPTIONS)."""

import pytest
import torch
import torch.nn.functional as F

from mmmask.data.loader import build_train_loader
from mmmask.modeling import build_model

from test_open_vocab import one_thread, tiny_cfg, train_steps  # noqa: F401 (one thread per test)
from test_self_train import CROP_TRAINING

CAPTIONS = ["MODEL.MASK_CROP.OWN_TEXT_TOWER", "True",
            "MODEL.MASK_CROP.CAPTIONS.DATASET", "shapes_ov_captions",
            "MODEL.MASK_CROP.CAPTIONS.BATCH_SIZE", "6",
            "DATASETS.SHAPES.CAPTION_KINDS", "('region',)"]


def _model(*opts):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*CROP_TRAINING, *opts))


def test_the_text_copy_encodes_free_text_as_the_frozen_tower_does():
    model = _model(*CAPTIONS).eval()
    texts = ["a red star", "a photo of a blue hexagon next to sand", "a red star"]
    copy = model.crop_classifier.text_tower.encode_texts(texts)
    text = model.backbone.text
    with torch.no_grad():  # open_clip's own text path, full context, as the reference
        reference = F.normalize(model.backbone.clip.encode_text(text.tokenizer(texts)), dim=-1)
    assert copy.shape == (3, model.backbone.embed_dim)
    assert torch.allclose(copy, reference, atol=1e-5)
    assert torch.allclose(text.encode_texts(texts), reference, atol=1e-5)


def test_the_caption_loss_trains_both_crop_towers():
    model = _model(*CAPTIONS).train()
    crop = model.crop_classifier
    images = torch.randn(4, 3, 40, 40)  # resized to the crop size inside
    captions = ["a red star", "a blue ring", "a red star", "a green cross"]
    loss = crop.caption_loss(images, captions, model.backbone)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for module in (crop.tower, crop.text_tower):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert crop.log_logit_scale.grad is not None
    assert model.backbone.clip.visual.trunk.stem[0].weight.grad is None  # the backbone is frozen
    with pytest.raises(ValueError, match="3 captions"):
        crop.caption_loss(images, captions[:3], model.backbone)
    # without a text copy the captions go through the backbone's frozen text tower
    image_only = _model(*CAPTIONS, "MODEL.MASK_CROP.OWN_TEXT_TOWER", "False").train()
    crop = image_only.crop_classifier
    assert crop.text_tower is None
    crop.caption_loss(images, captions, image_only.backbone).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in crop.tower.parameters())
    assert all(p.grad is None for p in image_only.backbone.parameters())


def test_a_training_step_adds_the_caption_loss_and_draws_fresh_pairs(monkeypatch):
    model = _model(*CAPTIONS).train()
    batch = next(iter(build_train_loader(tiny_cfg(*CROP_TRAINING))))
    drawn = []
    caption_loss = model.crop_classifier.caption_loss

    def spy(images, captions, backbone):
        drawn.append(list(captions))
        assert images.shape[0] == 6 and images.dtype == torch.float32
        assert images.abs().max() < 10  # CLIP-normalised, not 0-255
        return caption_loss(images, captions, backbone)

    monkeypatch.setattr(model.crop_classifier, "caption_loss", spy)
    out = model(batch)
    assert set(out) == {"loss_crop_ce", "loss_crop_consistency", "loss_crop_caption"}
    assert torch.isfinite(out["loss_crop_caption"])
    model(batch)
    assert len(drawn) == 2 and drawn[0] != drawn[1]  # random pairs every step
    # twice the weight (0.3 by default), twice the loss (same draws under the same seed)
    double = _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.WEIGHT", "0.6").train()
    torch.manual_seed(1)
    a = model(batch)["loss_crop_caption"]
    torch.manual_seed(1)
    b = double(batch)["loss_crop_caption"]
    assert torch.allclose(b, 2 * a, rtol=1e-4)


def test_training_on_captions_lowers_their_loss():
    model = _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.BATCH_SIZE", "8").train()
    crop = model.crop_classifier
    records, mapper, _, _ = model.crop_captions
    items = [mapper(records[i]) for i in range(8)]
    images = model.backbone.normalize(torch.stack([d["image"] for d in items]))
    captions = [d["caption"] for d in items]
    opt = torch.optim.AdamW([p for p in crop.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        loss = crop.caption_loss(images, captions, model.backbone)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_off_when_not_training_the_crops_and_bad_settings_refused():
    evaluating = build_model(tiny_cfg(*CAPTIONS))  # a training config evaluated: nothing drawn
    assert evaluating.crop_captions is None
    with pytest.raises(ValueError, match="BATCH_SIZE must be >= 2"):
        _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.BATCH_SIZE", "1")
    with pytest.raises(ValueError, match="WEIGHT >= 0"):
        _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.WEIGHT", "-1.0")
    with pytest.raises(KeyError, match="no_such_captions"):
        _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.DATASET", "no_such_captions")
    from mmmask.data.catalog import DatasetCatalog, MetadataCatalog, register_dataset

    register_dataset("empty_captions", lambda: [], overwrite=True)
    try:
        with pytest.raises(ValueError, match="no image-caption pairs"):
            _model(*CAPTIONS, "MODEL.MASK_CROP.CAPTIONS.DATASET", "empty_captions")
    finally:
        DatasetCatalog.remove("empty_captions")
        MetadataCatalog.remove("empty_captions")
