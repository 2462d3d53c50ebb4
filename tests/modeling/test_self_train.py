"""Self-training on the unlabelled pixels of training images (MODEL.SELF_TRAIN)."""

import pytest
import torch

from mmmask.data.loader import build_train_loader
from mmmask.data.vocab import Vocabulary
from mmmask.modeling import build_model

from test_open_vocab import one_thread, tiny_cfg  # noqa: F401 (one thread for every test)

CROP_TRAINING = ["MODEL.TRAIN_GENERATOR", "False", "MODEL.MASK_CROP.FUSION_WEIGHT", "0.5",
                 "MODEL.MASK_CROP.OWN_TOWER", "True", "MODEL.MASK_CROP.TRAIN", "True",
                 "MODEL.MASK_ADAPTER.TRAIN_MASKS", "mixed"]


def _model(*opts):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*CROP_TRAINING, "MODEL.SELF_TRAIN.ENABLED", "True", *opts))


def test_training_vocabulary_is_the_whole_one_with_its_seen_flags():
    plain = build_model(tiny_cfg(*CROP_TRAINING))
    model = _model()
    assert len(plain.train_vocabulary) == 52 and len(model.train_vocabulary) == 70
    assert model.train_vocabulary is model.dataset_vocabulary
    model.train()
    model.set_vocabulary(model.train_vocabulary, model._train_is_thing)
    assert model._seen.sum() == 52  # unseen classes stay unseen for the ensemble
    assert torch.equal(model._train_class_map, torch.arange(70))


def _fake_inference(model, monkeypatch, probs, objectness, masks):
    def predict_raw(*args, **kwargs):  # the pseudo-labeller names masks as at inference
        assert not model.training and not model.crop_classifier.training
        return {}

    monkeypatch.setattr(model, "_predict_raw", predict_raw)
    logits = torch.where(masks, 10.0, -10.0)
    monkeypatch.setattr(model, "_class_probs",
                        lambda raw, ensemble: (probs, objectness, logits))


def test_pseudo_labels_are_confident_unseen_masks_on_unlabelled_pixels(monkeypatch):
    model = _model("MODEL.SELF_TRAIN.THRESHOLD", "0.5", "MODEL.SELF_TRAIN.MIN_AREA", "0.01").train()
    seen = model._seen
    unseen_a, unseen_b = [int(i) for i in torch.nonzero(~seen)[:2, 0]]
    seen_c = int(torch.nonzero(seen)[0, 0])
    size = (64, 64)
    sem = torch.zeros(size, dtype=torch.long)
    sem[:32] = 255  # the top half is unlabelled
    region = torch.zeros(size, dtype=torch.bool)
    region[4:28, 4:40] = True  # inside the unlabelled half
    spill = region.clone()
    spill[28:36, 4:40] = True  # 4 of its 32 rows on labelled pixels
    tiny = torch.zeros(size, dtype=torch.bool)
    tiny[0:3, 50:53] = True  # 9 px < 1 % of the image
    labelled = torch.zeros(size, dtype=torch.bool)
    labelled[40:60, 10:30] = True
    masks = torch.stack([spill, region, region, labelled, region, tiny])[None]
    q = masks.shape[1]
    probs = torch.full((1, q, 70), 0.0)
    for i, (c, p) in enumerate([(unseen_a, 0.95), (unseen_b, 0.9), (seen_c, 0.99),
                                (unseen_a, 0.99), (unseen_b, 0.3), (unseen_b, 0.99)]):
        probs[0, i, c] = p
    objectness = torch.ones(1, q)
    _fake_inference(model, monkeypatch, probs, objectness, masks)
    item = {"sem_seg": sem}
    targets = [{"masks": torch.ones(1, *size), "classes": torch.tensor([seen_c])}]
    out = model._with_pseudo_labels([item], torch.zeros(1, 3, *size), [size], targets)[0][0]
    # kept: the spilling mask (87.5 % unlabelled), cut to the unlabelled pixels; dropped: its
    # duplicate, a seen name, a mask on labelled pixels, a low score, a tiny mask
    assert out["classes"].tolist() == [seen_c, unseen_a]
    assert model.training and model.crop_classifier.training  # back to training
    assert torch.equal(out["masks"][1].bool(), spill & (sem == 255))
    assert out["masks"][1].sum() == 28 * 36
    assert torch.equal(out["masks"][0], targets[0]["masks"][0])
    objectness[0, 0] = 0.5  # score 0.95 x 0.5 < 0.5: the next best, the duplicate, comes in
    out = model._with_pseudo_labels([item], torch.zeros(1, 3, *size), [size], targets)[0][0]
    assert out["classes"].tolist() == [seen_c, unseen_b]
    with pytest.raises(ValueError, match="sem_seg"):
        model._with_pseudo_labels([{}], torch.zeros(1, 3, *size), [size], targets)


def test_a_training_step_trains_the_crops_on_pseudo_labels(monkeypatch):
    model = _model().train()
    batch = next(iter(build_train_loader(tiny_cfg(*CROP_TRAINING))))
    unseen = int(torch.nonzero(~model._seen)[0, 0])
    pseudo = []

    def with_pseudo(batch, images, sizes, targets, feats):
        pseudo.append(True)
        assert "clip_dense" in feats  # the step's backbone features, not computed again
        m = torch.zeros(images.shape[-2:])
        m[:16, :16] = 1
        return [dict(t, masks=torch.cat([t["masks"], m[None].to(t["masks"])]),
                     classes=torch.cat([t["classes"], torch.tensor([unseen])]))
                for t in targets], None

    monkeypatch.setattr(model, "_with_pseudo_labels", with_pseudo)
    got = {}
    losses = model.crop_classifier.losses

    def spy(output, classes, *a, **k):
        got["classes"], got["logits"] = classes, output.logits
        return losses(output, classes, *a, **k)

    monkeypatch.setattr(model.crop_classifier, "losses", spy)
    out = model(batch)
    assert pseudo and "loss_crop_ce" in out and torch.isfinite(out["loss_crop_ce"])
    assert (got["classes"] == unseen).sum() >= len(batch)  # one pseudo-label per image
    assert got["logits"].shape[-1] == 71  # named against all 70 classes (+ void)


def test_bad_self_training_settings_fail_clearly(monkeypatch):
    with pytest.raises(ValueError, match="THRESHOLD"):
        _model("MODEL.SELF_TRAIN.THRESHOLD", "1.5")
    import mmmask.modeling.meta_arch.open_vocab as ov

    vocab, is_thing = ov.default_vocabulary("shapes_ov_train")
    everything = Vocabulary(vocab.classes, seen=(True,) * len(vocab))
    monkeypatch.setattr(ov, "default_vocabulary", lambda name: (everything, is_thing))
    with pytest.raises(ValueError, match="unseen in training"):
        _model()


def test_a_step_runs_the_generator_and_the_refinement_once(monkeypatch):
    """The pseudo-labeller's inference pass gives the mixed-mask training its predicted masks,
    refined, instead of a second generator run and refinement."""
    opts = ["MODEL.MASK_CROP.TRAIN_MASK_SIZE", "image", "MODEL.TEST.MASK_REFINE.ENABLED", "True"]
    model = _model(*opts).train()
    batch = next(iter(build_train_loader(tiny_cfg(*CROP_TRAINING, *opts))))
    calls = {"generator": 0, "refiner": 0}
    generator, refiner = model.mask_generator.forward, model.mask_refiner
    crop_forward, seen = model.crop_classifier.forward, {}

    def count_generator(*a, **k):
        calls["generator"] += 1
        return generator(*a, **k)

    def count_refiner(*a, **k):
        calls["refiner"] += 1
        out = refiner(*a, **k)
        seen["refined"] = out.sigmoid()
        return out

    def crops(dense, masks, *a, **k):
        if model.training:
            seen["trained_on"] = masks
        return crop_forward(dense, masks, *a, **k)

    monkeypatch.setattr(model.mask_generator, "forward", count_generator)
    monkeypatch.setattr(model, "mask_refiner", count_refiner)
    monkeypatch.setattr(model.crop_classifier, "forward", crops)
    assert "loss_crop_ce" in model(batch)
    assert calls == {"generator": 1, "refiner": 1}
    # the crops train on those refined masks (matched ones carry them as they are)
    assert any(torch.allclose(m, r, atol=1e-5) for m in seen["trained_on"][0]
               for r in seen["refined"][0])
