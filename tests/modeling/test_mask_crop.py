"""The crop-and-classify baseline (MaskCrop): boxes, crops, CLIP embeddings, and its fusion with
another classifier inside the segmentor."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from mmmask.data.loader import build_test_loader
from mmmask.modeling import build_model
from mmmask.modeling.clip import CLIPBackbone
from mmmask.modeling.mask_crop import MaskCrop, mask_boxes, resize_mask_probs

from test_open_vocab import tiny_cfg, train_steps


def _square(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def test_mask_boxes_are_squares_with_context_inside_the_frame():
    masks = torch.stack([
        _square(40, 60, 10, 20, 20, 40),  # 10 x 20 -> side 30 centred at (15, 30)
        _square(40, 60, 0, 4, 0, 4),  # in the corner: the box shifts inside
        torch.zeros(40, 60),  # empty: the whole frame
        _square(40, 60, 0, 40, 0, 60),  # larger than the frame allows: side = min(H, W)
    ])
    boxes = mask_boxes(masks, context=1.5)
    assert torch.allclose(boxes[0], torch.tensor([15.0, 0.0, 45.0, 30.0]))
    assert torch.allclose(boxes[1], torch.tensor([0.0, 0.0, 6.0, 6.0]))
    assert torch.allclose(boxes[2], torch.tensor([0.0, 0.0, 60.0, 40.0]))
    assert boxes[3, 2] - boxes[3, 0] == 40 and boxes[3, 3] - boxes[3, 1] == 40
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    tight = mask_boxes(masks[:1], context=1.0)
    assert torch.allclose(tight[0], torch.tensor([20.0, 5.0, 40.0, 25.0]))
    each = mask_boxes(masks[:2].repeat(2, 1, 1), context=torch.tensor([1.5, 1.5, 1.0, 2.0]))
    assert torch.allclose(each[:2], boxes[:2])  # one box size per mask
    assert torch.allclose(each[2], tight[0])
    assert torch.allclose(each[3], mask_boxes(masks[1:2], context=2.0)[0])


def test_crops_keep_the_box_or_fade_the_background():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 48)
    masks = torch.stack([_square(32, 48, 8, 16, 8, 16), _square(32, 48, 0, 32, 0, 48)])[None]
    masks = masks.expand(2, -1, -1, -1)
    keep = MaskCrop(dense_dim=4, embed_dim=8, crop_size=16, context=1.5, background=1.0)
    crops = keep.crops(images, masks)
    assert crops.shape == (4, 3, 16, 16)
    box = mask_boxes(masks[1, :1], 1.5)
    ref = roi_align(images[1:2], [box], (16, 16), sampling_ratio=2, aligned=True)
    assert torch.allclose(crops[2], ref[0], atol=1e-6)
    blank = MaskCrop(dense_dim=4, embed_dim=8, crop_size=16, context=1.5, background=0.0)
    faded = blank.crops(images, masks)
    assert faded[0, :, 0, 0].abs().max() < 1e-6  # a corner of the box lies outside the mask
    assert torch.allclose(faded[0, :, 8, 8], crops[0, :, 8, 8])  # the centre lies inside
    assert torch.allclose(faded[1], crops[1], atol=1e-6)  # the mask covers its whole box


def test_forward_embeds_each_crop_with_clip():
    torch.manual_seed(0)
    bb = CLIPBackbone(model_name="mmmask-shapes-convnext")
    clf = MaskCrop(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=64)
    images = torch.randn(1, 3, 64, 96)
    masks = torch.stack([_square(64, 96, 10, 30, 10, 50), _square(64, 96, 30, 60, 50, 90)])[None]
    text = F.normalize(torch.randn(5, bb.embed_dim), dim=-1)
    dense = bb(images)["clip_dense"]
    out = clf(dense, masks, text, bb, images=images)
    assert out.logits.shape == (1, 2, 6) and out.embeddings.shape == (1, 2, bb.embed_dim)
    ref = F.normalize(bb.clip.encode_image(clf.crops(images, masks)), dim=-1)
    assert torch.allclose(out.embeddings[0], ref, atol=1e-5)
    assert torch.allclose(out.logits[0, :, :5], clf.logit_scale * ref @ text.t(), atol=1e-4)
    with pytest.raises(ValueError, match="images"):
        clf(dense, masks, text, bb)
    empty = clf(dense, masks[:, :0], text, bb, images=images)
    assert empty.logits.shape == (1, 0, 6)


def _clip_and_two_masks(second=(30, 60, 50, 90)):
    """A random tiny CLIP, an image, two box masks, 5 class embeddings and the dense map."""
    torch.manual_seed(0)
    bb = CLIPBackbone(model_name="mmmask-shapes-convnext")
    images = torch.randn(1, 3, 64, 96)
    masks = torch.stack([_square(64, 96, 10, 30, 10, 50), _square(64, 96, *second)])[None]
    text = F.normalize(torch.randn(5, bb.embed_dim), dim=-1)
    return bb, images, masks, text, bb(images)["clip_dense"]


def test_test_time_ensemble_averages_box_sizes_and_mirror_images():
    bb, images, masks, text, dense = _clip_and_two_masks()
    kw = dict(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=64)
    one = MaskCrop(context=1.5, **kw)
    both = MaskCrop(context=1.5, extra_contexts=(2.0,), flip=True, **kw)
    views = []
    for c in (1.5, 2.0):
        crops = one.crops(images, masks, context=c)
        views += [crops, crops.flip(-1)]
    ref = sum(F.normalize(bb.clip.encode_image(v), dim=-1) for v in views)
    out = both(dense, masks, text, bb, images=images)
    assert torch.allclose(out.embeddings[0], F.normalize(ref, dim=-1), atol=1e-5)
    assert not torch.allclose(out.embeddings, one(dense, masks, text, bb, images=images).embeddings,
                              atol=1e-3)
    assert both(dense, masks[:, :0], text, bb, images=images).logits.shape == (1, 0, 6)
    cfg = tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.MASK_CROP.EXTRA_CONTEXTS",
                   "(1.75, 2.0)", "MODEL.MASK_CROP.FLIP", "True")
    clf = build_model(cfg).classifier
    assert clf.contexts == (1.5, 1.75, 2.0) and clf.flip


def test_test_time_rotations_average_turned_crops_and_their_mirror_images():
    bb, images, masks, text, dense = _clip_and_two_masks()
    kw = dict(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=64, context=1.5)
    turned = MaskCrop(rotations=(180, 90), flip=True, **kw)
    crops = turned.crops(images, masks)
    views = [crops, crops.rot90(2, dims=(-2, -1)), crops.rot90(1, dims=(-2, -1))]
    views += [v.flip(-1) for v in views]
    ref = sum(F.normalize(bb.clip.encode_image(v), dim=-1) for v in views)
    out = turned(dense, masks, text, bb, images=images)
    assert torch.allclose(out.embeddings, F.normalize(ref, dim=-1).reshape(1, 2, -1), atol=1e-5)
    # with (180,) and flip the views are the dihedral four: as cut, mirrored left-right,
    # mirrored top-bottom (turned half a turn and mirrored) and turned half a turn
    half = MaskCrop(rotations=(180,), flip=True, **kw)._views(crops)
    expected = [crops, crops.flip(-1), crops.flip(-2), crops.flip(-1).flip(-2)]
    assert len(half) == 4
    assert all(any(torch.equal(v, e) for v in half) for e in expected)
    for bad in [(45,), (180, 180), (0,)]:
        with pytest.raises(ValueError, match="MODEL.MASK_CROP.ROTATIONS"):
            MaskCrop(rotations=bad, **kw)
    cfg = tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.MASK_CROP.ROTATIONS", "(180,)")
    assert build_model(cfg).classifier.rotations == (180,)


def test_training_turns_each_crop_by_one_of_the_test_time_angles(monkeypatch):
    bb, images, masks, text, dense = _clip_and_two_masks(second=(30, 50, 50, 70))
    clf = MaskCrop(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=32, context=1.5,
                   rotations=(90, 180), train_rotate=True)
    seen = []
    encode = bb.encode_image
    monkeypatch.setattr(bb, "encode_image", lambda x: seen.append(x) or encode(x))
    plain = clf.crops(images, masks)
    turns = [plain, plain.rot90(1, dims=(-2, -1)), plain.rot90(2, dims=(-2, -1))]
    clf.train()
    counts = [0, 0, 0]
    for _ in range(15):
        clf(dense, masks, text, bb, images=images)
        assert len(seen) == 1  # training shows one view per crop
        for i in range(2):
            (k,) = [k for k in range(3) if torch.allclose(seen[0][i], turns[k][i])]
            counts[k] += 1
        seen.clear()
    assert all(c > 0 for c in counts)
    clf.eval()
    clf(dense, masks, text, bb, images=images)
    assert len(seen) == 3 and torch.allclose(seen[0], plain)  # inference: every view
    # TRAIN_ROTATE without angles: inference runs (one view), training fails with one message
    cfg = tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.MASK_CROP.TRAIN_ROTATE", "True",
                   "MODEL.MASK_CROP.ROTATIONS", "()")
    unturned = build_model(cfg).classifier
    assert unturned.train_rotate and unturned.rotations == ()
    unturned.eval()
    assert unturned(dense, masks, text, bb, images=images).logits.shape == (1, 2, 6)
    unturned.train()
    with pytest.raises(ValueError, match="TRAIN_ROTATE.*ROTATIONS.*empty"):
        unturned(dense, masks, text, bb, images=images)


def test_training_jitters_box_sizes_and_mirrors_crops_but_inference_does_not(monkeypatch):
    bb, images, masks, text, dense = _clip_and_two_masks(second=(30, 50, 50, 70))
    clf = MaskCrop(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=32, context=1.5,
                   train_context_jitter=0.5, train_flip=True)
    seen = []  # (box sides, crops) the tower is given
    encode = bb.encode_image
    monkeypatch.setattr(bb, "encode_image", lambda x: seen.append(x) or encode(x))
    calls = []
    real_boxes = mask_boxes
    monkeypatch.setattr("mmmask.modeling.mask_crop.mask_boxes",
                        lambda m, c, *a: calls.append(c) or real_boxes(m, c, *a))
    clf.eval()
    ref = clf(dense, masks, text, bb, images=images).embeddings
    assert calls[-1] == 1.5  # inference: the configured box, no mirror
    assert torch.allclose(seen[-1], clf.crops(images, masks))
    clf.train()
    sides, mirrored = [], 0
    for _ in range(20):
        out = clf(dense, masks, text, bb, images=images)
        c = calls[-1]
        assert isinstance(c, torch.Tensor) and c.shape == (2,)
        assert ((c >= 1.5 / 1.5 - 1e-6) & (c <= 1.5 * 1.5 + 1e-6)).all()
        sides.append(c)
        plain = clf._crops(images, clf._image_frame(images, masks), c)
        flipped = [not torch.allclose(seen[-1][i], plain[i]) for i in range(2)]
        for i in range(2):
            if flipped[i]:
                assert torch.allclose(seen[-1][i], plain[i].flip(-1))
        mirrored += sum(flipped)
    sides = torch.stack(sides)
    assert sides.std() > 0.1 and (sides < 1.5).any() and (sides > 1.5).any()
    assert 5 < mirrored < 35  # about half of the 40 crops
    assert not torch.allclose(out.embeddings, ref, atol=1e-3)
    with pytest.raises(ValueError, match="TRAIN_CONTEXT_JITTER"):
        MaskCrop(dense_dim=4, embed_dim=8, train_context_jitter=-0.1)
    cfg = tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.MASK_CROP.TRAIN_CONTEXT_JITTER",
                   "0.25", "MODEL.MASK_CROP.TRAIN_FLIP", "True")
    built = build_model(cfg).classifier
    assert built.train_context_jitter == 0.25 and built.train_flip


def test_mask_probabilities_are_resized_as_logits():
    # a coarse mask whose outline falls between two coarse pixels
    coarse = torch.full((1, 1, 4, 8), 0.02)
    coarse[..., :4] = 0.98
    fine = resize_mask_probs(coarse, (16, 32))
    assert fine.shape == (1, 1, 16, 32)
    assert torch.equal(resize_mask_probs(coarse, (4, 8)), coarse)
    row = fine[0, 0, 8]
    assert (row[:16] > 0.5).all() and (row[16:] < 0.5).all()  # the outline keeps its place
    smeared = F.interpolate(coarse, size=(16, 32), mode="bilinear", align_corners=False)[0, 0, 8]
    # sharper than resizing the probabilities: fewer pixels in between
    between = ((row > 0.1) & (row < 0.9)).sum()
    assert between < ((smeared > 0.1) & (smeared < 0.9)).sum()
    # binary masks stay binary where the coarse pixels agree; any leading dims
    hard = resize_mask_probs((coarse > 0.5).float()[0], (16, 32))
    assert hard.shape == (1, 16, 32) and hard[0, 0, 0] > 0.99 and hard[0, 0, -1] < 0.01


def test_crop_size_and_its_limits():
    cfg = tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.MASK_CROP.CROP_SIZE", "48")
    clf = build_model(cfg).classifier
    assert clf.crop_size == 48
    masks = _square(64, 64, 10, 30, 10, 50)[None, None]
    assert clf.crops(torch.randn(1, 3, 64, 64), masks).shape == (1, 3, 48, 48)
    assert build_model(tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop")).classifier.crop_size \
        == cfg.MODEL.CLIP.IMAGE_SIZE  # 0 = CLIP's own size
    with pytest.raises(ValueError, match="ViT"):
        build_model(tiny_cfg("MODEL.CLIP.MODEL_NAME", "mmmask-shapes-vit",
                             "MODEL.MASK_CLASSIFIER.NAME", "MaskCrop",
                             "MODEL.MASK_CROP.CROP_SIZE", "48"))


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="EXTRA_CONTEXTS"):
        MaskCrop(dense_dim=4, embed_dim=8, extra_contexts=(2.0, 0.5))
    with pytest.raises(ValueError, match="CONTEXT"):
        MaskCrop(dense_dim=4, embed_dim=8, context=0.5)
    with pytest.raises(ValueError, match="BACKGROUND"):
        MaskCrop(dense_dim=4, embed_dim=8, background=2.0)
    with pytest.raises(ValueError, match="FUSION_WEIGHT"):
        build_model(tiny_cfg("MODEL.MASK_CROP.FUSION_WEIGHT", "1.5"))
    with pytest.raises(ValueError, match="TRAIN_MASK_SIZE"):
        build_model(tiny_cfg("MODEL.MASK_CROP.TRAIN_MASK_SIZE", "full"))
    with pytest.raises(ValueError, match="CROP_SIZE"):
        MaskCrop(dense_dim=4, embed_dim=8, crop_size=4)
    with pytest.raises(ValueError, match="MaskCrop already"):
        build_model(tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop",
                             "MODEL.MASK_CROP.FUSION_WEIGHT", "0.5"))


def test_segmentor_with_crops_alone_and_fused():
    torch.manual_seed(0)
    crop = build_model(tiny_cfg("MODEL.MASK_CLASSIFIER.NAME", "MaskCrop")).eval()
    fused = build_model(tiny_cfg("MODEL.MASK_CROP.FUSION_WEIGHT", "1.0")).eval()
    plain = build_model(tiny_cfg()).eval()
    fused.load_state_dict(crop.state_dict(), strict=False)  # all but the classifier's two scalars
    fused.crop_classifier.log_logit_scale.copy_(crop.classifier.log_logit_scale.detach())
    fused.crop_classifier.void_logit.copy_(crop.classifier.void_logit.detach())
    plain.load_state_dict(fused.state_dict())  # the fusion copy adds nothing to checkpoints
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))
    images, _ = crop._images(batch)
    p_crop, obj_crop, _ = crop.predict_masks(images)
    p_fused, obj_fused, _ = fused.predict_masks(images)  # weight 1: the crops alone decide
    p_plain, _, _ = plain.predict_masks(images)
    assert torch.allclose(p_fused, p_crop, atol=1e-5)
    assert torch.allclose(obj_fused, obj_crop)
    assert not torch.allclose(p_plain, p_crop, atol=1e-3)
    assert not list(fused.crop_classifier.parameters())
    out = fused(batch)[0]
    assert out["sem_seg"].shape[0] == 70


def test_own_tower_replaces_the_backbone_image_tower():
    torch.manual_seed(0)
    bb = CLIPBackbone(model_name="mmmask-shapes-convnext")
    tower = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, bb.embed_dim))
    clf = MaskCrop(dense_dim=bb.dense_dim, embed_dim=bb.embed_dim, crop_size=64, tower=tower)
    images = torch.randn(1, 3, 64, 64)
    masks = torch.stack([_square(64, 64, 10, 30, 10, 50), _square(64, 64, 30, 60, 20, 60)])[None]
    text = F.normalize(torch.randn(5, bb.embed_dim), dim=-1)
    out = clf(bb(images)["clip_dense"], masks, text, bb, images=images)
    ref = F.normalize(tower(clf.crops(images, masks)), dim=-1)
    assert torch.allclose(out.embeddings[0], ref, atol=1e-5)
    assert {n.split(".")[0] for n, _ in clf.named_parameters()} >= {"tower"}


def _crop_training(own: str):
    """Config and model (train mode) training only the crop classifier with its ``own`` tower
    (``"OWN_TOWER"`` or ``"OWN_TEXT_TOWER"``) on mixed masks."""
    cfg = tiny_cfg("MODEL.TRAIN_GENERATOR", "False", "MODEL.MASK_CROP.FUSION_WEIGHT", "0.5",
                   f"MODEL.MASK_CROP.{own}", "True", "MODEL.MASK_CROP.TRAIN", "True",
                   "MODEL.MASK_ADAPTER.TRAIN_MASKS", "mixed")
    torch.manual_seed(0)
    return cfg, build_model(cfg).train()


def test_training_the_crop_tower_moves_only_the_tower():
    cfg, model = _crop_training("OWN_TOWER")
    tower = model.crop_classifier.tower
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # the copy starts as the backbone's image tower
    for (n, p), q in zip(tower.named_parameters(), model.backbone.clip.visual.parameters()):
        assert torch.equal(p, q), n
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("crop_classifier.") for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    from mmmask.data.loader import build_train_loader

    batch = next(iter(build_train_loader(cfg)))
    losses = []
    for _ in range(8):
        loss_dict = model(batch)
        assert set(loss_dict) == {"loss_crop_ce", "loss_crop_consistency"}
        loss = sum(loss_dict.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert moved and all(k.startswith("crop_classifier.") for k in moved)
    # the trained copy is part of the checkpoint and names masks at inference
    assert any(k.startswith("crop_classifier.tower.") for k in model.state_dict())
    out = model.eval()(next(iter(build_test_loader(cfg, "shapes_ov_val"))))[0]
    assert out["sem_seg"].shape[0] == 70


@pytest.mark.parametrize("size", ["features", "image"])
def test_crop_tower_trains_on_masks_of_the_chosen_frame(size, monkeypatch):
    cfg = tiny_cfg("MODEL.TRAIN_GENERATOR", "False", "MODEL.MASK_CROP.FUSION_WEIGHT", "0.5",
                   "MODEL.MASK_CROP.OWN_TOWER", "True", "MODEL.MASK_CROP.TRAIN", "True",
                   "MODEL.MASK_ADAPTER.TRAIN_MASKS", "mixed", "MODEL.TRAIN_CLASSIFIER", "True",
                   "MODEL.MASK_CROP.TRAIN_MASK_SIZE", size)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    from mmmask.data.loader import build_train_loader

    batch = next(iter(build_train_loader(cfg)))
    seen = {}
    for name in ("crop_classifier", "classifier"):
        head = getattr(model, name)
        forward = head.forward

        def spy(dense, masks, *args, _name=name, _forward=forward, **kw):
            seen[_name] = masks
            return _forward(dense, masks, *args, **kw)

        monkeypatch.setattr(head, "forward", spy)
    losses = model(batch)
    # both heads' losses count (each consistency term under its own name)
    assert set(losses) == {"loss_adapter_ce", "loss_consistency", "loss_crop_ce",
                           "loss_crop_consistency"}
    image_size = max(b["image"].shape[-1] for b in batch)
    feat = seen["classifier"]
    assert feat.shape[-1] < image_size  # the Mask-Adapter keeps the feature frame
    crop = seen["crop_classifier"]
    assert crop.shape[-1] == (feat.shape[-1] if size == "features" else image_size)
    # ground-truth masks come first: binary at either size, and the image's own in "image" mode
    inst = batch[0]["instances"]
    seen_gt = inst["masks"][model._train_class_map[inst["classes"]] >= 0]
    assert len(seen_gt) > 0
    first = crop[0, 0]
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    if size == "image":
        h, w = seen_gt.shape[-2:]
        assert torch.equal(first[:h, :w].bool(), seen_gt[0].bool())
        assert not first[h:].any() and not first[:, w:].any()  # padding stays off


def test_crop_training_needs_the_own_tower():
    from mmmask.data.loader import build_train_loader

    for opts, key in ((("MODEL.MASK_CROP.FUSION_WEIGHT", "0.5"), "OWN_TOWER"),
                      (("MODEL.MASK_CROP.OWN_TOWER", "True"), "FUSION_WEIGHT")):
        cfg = tiny_cfg(*opts, "MODEL.MASK_CROP.TRAIN", "True", "MODEL.TRAIN_GENERATOR", "False")
        model = build_model(cfg)  # evaluating such a config is fine: only training needs it
        model.eval()(next(iter(build_test_loader(cfg, "shapes_ov_val"))))
        with pytest.raises(ValueError, match=key):
            model.train()(next(iter(build_train_loader(cfg))))


def test_a_tower_missing_from_loaded_weights_restarts_from_the_loaded_backbone():
    torch.manual_seed(0)
    cfg = tiny_cfg("MODEL.MASK_CROP.FUSION_WEIGHT", "0.5", "MODEL.MASK_CROP.OWN_TOWER", "True")
    earlier = build_model(tiny_cfg())  # an earlier stage: no tower in its weights
    model = build_model(cfg)
    state = earlier.state_dict()
    missing, _ = model.load_state_dict(state, strict=False)
    assert any(k.startswith("crop_classifier.tower.") for k in missing)
    for (n, p), q in zip(model.crop_classifier.tower.named_parameters(),
                         earlier.backbone.clip.visual.parameters()):
        assert torch.equal(p, q), n
    # weights that carry a trained tower keep it
    trained = {k: v + 1 if k.startswith("crop_classifier.tower.") and v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    model.load_state_dict(trained)
    p = next(model.crop_classifier.tower.parameters())
    q = next(model.backbone.clip.visual.parameters())
    assert torch.allclose(p, q + 1)


def test_own_text_tower_names_masks_and_trains_on_the_seen_names():
    cfg, model = _crop_training("OWN_TEXT_TOWER")
    text_tower = model.crop_classifier.text_tower
    assert model.crop_classifier.tower is None  # the image side stays the backbone's
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("crop_classifier.") for n in trainable)
    assert any(n.startswith("crop_classifier.text_tower.") for n in trainable)
    from mmmask.data.loader import build_train_loader

    batch = next(iter(build_train_loader(cfg)))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train_steps(model, batch, 6)
    assert losses[-1] < losses[0]
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert any(k.startswith("crop_classifier.text_tower.") for k in moved)
    assert all(k.startswith("crop_classifier.") for k in moved)
    # at inference the crops are named with the trained copy, the dense path with the backbone
    model.eval()
    vocab = model.vocabulary
    own = text_tower.encode_vocabulary(vocab)
    assert not torch.allclose(own, model.backbone.encode_vocabulary(vocab), atol=1e-4)
    shared = model.text_embeddings()
    assert torch.equal(model.crop_classifier.text_embeddings(vocab, shared), own)
    out = model(next(iter(build_test_loader(cfg, "shapes_ov_val"))))[0]
    assert out["sem_seg"].shape[0] == 70


def test_a_text_tower_missing_from_loaded_weights_restarts_from_the_loaded_backbone():
    torch.manual_seed(0)
    cfg = tiny_cfg("MODEL.MASK_CROP.FUSION_WEIGHT", "0.5", "MODEL.MASK_CROP.OWN_TEXT_TOWER", "True")
    earlier = build_model(tiny_cfg())  # an earlier stage: no text tower in its weights
    with torch.no_grad():
        for p in earlier.backbone.clip.transformer.parameters():
            p.add_(0.1)  # a backbone text tower that differs from the one the model was built with
    model = build_model(cfg)
    missing, _ = model.load_state_dict(earlier.state_dict(), strict=False)
    assert any(k.startswith("crop_classifier.text_tower.") for k in missing)
    vocab = model.vocabulary
    assert torch.allclose(model.crop_classifier.text_tower.encode_vocabulary(vocab),
                          earlier.backbone.encode_vocabulary(vocab), atol=1e-5)


def test_crop_tower_trains_on_refined_predicted_masks_when_inference_refines_them(monkeypatch):
    cfg = tiny_cfg("MODEL.TRAIN_GENERATOR", "False", "MODEL.MASK_CROP.FUSION_WEIGHT", "0.5",
                   "MODEL.MASK_CROP.OWN_TOWER", "True", "MODEL.MASK_CROP.TRAIN", "True",
                   "MODEL.MASK_ADAPTER.TRAIN_MASKS", "mixed",
                   "MODEL.MASK_CROP.TRAIN_MASK_SIZE", "image",
                   "MODEL.TEST.MASK_REFINE.ENABLED", "True")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    from mmmask.data.loader import build_train_loader

    batch = next(iter(build_train_loader(cfg)))
    refiner, refined = model.mask_refiner, []

    def record(logits, images, sizes):
        out = refiner(logits, images, sizes)
        refined.append(out.sigmoid())
        return out

    seen = {}
    forward = model.crop_classifier.forward

    def spy(dense, masks, *args, **kw):
        seen["masks"] = masks
        return forward(dense, masks, *args, **kw)

    monkeypatch.setattr(model.crop_classifier, "forward", spy)

    def uses_refined(masks, probs) -> bool:
        return any(torch.allclose(m, p, atol=1e-5) for m in masks[0] for p in probs[0])

    model.mask_refiner = record
    assert "loss_crop_ce" in model(batch)
    assert len(refined) == 1 and refined[0].shape[-1] == seen["masks"].shape[-1]
    assert uses_refined(seen["masks"], refined[0])
    model.mask_refiner = None  # without refinement the crops see the upsampled masks
    model(batch)
    assert not uses_refined(seen["masks"], refined[0])
