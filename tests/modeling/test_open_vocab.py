"""OpenVocabSegmentor end to end on tiny Shapes-OV batches (random CLIP weights)."""

import pytest
import torch
import torch.nn.functional as F

import mmmask.modeling.meta_arch.open_vocab as meta
from mmmask.config import load_cfg
from mmmask.data.loader import build_test_loader, build_train_loader
from mmmask.data.vocab import parse_vocab
from mmmask.modeling import build_model

TINY = ["MODEL.CLIP.PRETRAINED", "", "INPUT.IMAGE_SIZE", "64", "DATASETS.SHAPES.IMAGE_SIZE", "64",
        "MODEL.PMP.NUM_QUERIES", "8", "MODEL.PMP.DEC_LAYERS", "2", "MODEL.PMP.HIDDEN_DIM", "32",
        "MODEL.PMP.MASK_DIM", "32", "MODEL.PMP.DIM_FEEDFORWARD", "64", "MODEL.PMP.TRAIN_NUM_POINTS",
        "256", "MODEL.MASK_ADAPTER.HIDDEN_DIM", "32", "SOLVER.IMS_PER_BATCH", "2"]


def tiny_cfg(*opts):
    return load_cfg("configs/shapes/pmp.yaml", TINY + list(opts))


def train_steps(model, batch, steps: int, lr: float = 3e-3) -> list[float]:
    """``steps`` AdamW steps of ``model``'s trainable parameters on one batch; the losses."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("clip", ["mmmask-shapes-convnext", "mmmask-shapes-vit"])
def test_eval_outputs_for_every_task(clip):
    cfg = tiny_cfg("MODEL.CLIP.MODEL_NAME", clip)
    model = build_model(cfg).eval()
    batch = next(iter(build_test_loader(cfg, "shapes_ov_val")))
    out = model(batch)[0]
    h, w = batch[0]["height"], batch[0]["width"]
    assert out["sem_seg"].shape == (70, h, w)
    ids, segs = out["panoptic_seg"]
    assert ids.shape == (h, w)
    assert all({"id", "category_id", "isthing", "score"} <= set(s) for s in segs)
    assert out["instances"]["masks"].shape[1:] == (h, w)


def test_vocabulary_switch_changes_class_count():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    batch = next(iter(build_test_loader(cfg, "shapes_ov_val")))
    model.set_vocabulary(parse_vocab("red star|red thing,sky,blue ring"))
    assert model(batch)[0]["sem_seg"].shape[0] == 3
    assert model._seen.tolist() == [True, True, True]  # all three are seen training classes


@pytest.mark.parametrize("stage", [("True", "False", "gt"), ("False", "True", "gt"),
                                   ("False", "True", "mixed")])
def test_training_steps_lower_the_loss(stage):
    gen, cls, masks = stage
    cfg = tiny_cfg("MODEL.TRAIN_GENERATOR", gen, "MODEL.TRAIN_CLASSIFIER", cls,
                   "MODEL.MASK_ADAPTER.TRAIN_MASKS", masks, "MODEL.PMP.DEEP_SUPERVISION", "False")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_train_loader(cfg)))
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(not p.requires_grad for p in model.backbone.parameters())
    losses = train_steps(model, batch, 12)
    assert losses[-1] < losses[0]


def test_leftover_proposals_follow_the_generator_masks():
    torch.manual_seed(0)
    plain = build_model(tiny_cfg()).eval()
    left = build_model(tiny_cfg("MODEL.TEST.LEFTOVER_REGIONS", "2",
                                "MODEL.TEST.LEFTOVER_MIN_AREA", "0.0")).eval()
    left.load_state_dict(plain.state_dict())  # no parameters of its own
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))
    images, sizes = plain._images(batch)
    p0, o0, m0 = plain.predict_masks(images)
    p1, o1, m1 = left.predict_masks(images, image_sizes=sizes)
    q = m0.shape[1]
    assert m1.shape[1] == q + 2 and p1.shape[:2] == o1.shape == (len(batch), q + 2)
    assert torch.allclose(p1[:, :q], p0, atol=1e-5) and torch.allclose(o1[:, :q], o0)
    assert torch.allclose(m1[:, :q], m0)
    extra = o1[:, q:]
    assert ((extra == 0) | (extra == 1)).all()  # found regions count fully, empty slots not
    assert extra.sum() > 0  # an untrained generator leaves plenty uncovered
    cover = (m0.sigmoid() * o0[..., None, None]).amax(1)
    for i in range(len(batch)):
        for k in range(2):
            region = m1[i, q + k].sigmoid() > 0.5
            assert bool(region.any()) == bool(extra[i, k])
            assert (cover[i][region] < 0.5).all()  # only what the masks leave uncovered
    out = left(batch)[0]
    assert out["sem_seg"].shape[0] == 70 and "panoptic_seg" in out and "instances" in out
    with pytest.raises(ValueError, match="LEFTOVER_REGIONS"):
        build_model(tiny_cfg("MODEL.TEST.LEFTOVER_REGIONS", "-1"))


def test_leftover_proposals_follow_external_masks_with_scores():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.TEST.LEFTOVER_REGIONS", "1")).eval()
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))[:1]
    images, sizes = model._images(batch)
    h, w = images.shape[-2:]
    masks = torch.zeros(1, 2, h, w)
    masks[0, 0, : h // 2] = 1.0  # the top half is covered; the bottom half is left over
    masks[0, 1, :, : w // 4] = 1.0
    scores = torch.tensor([[0.9, 0.2]])  # ... and so is the low-scored left strip
    probs, objectness, logits = model.predict_masks(images, masks, scores, image_sizes=sizes)
    assert probs.shape[1] == 3 and torch.allclose(objectness, torch.tensor([[0.9, 0.2, 1.0]]))
    region = logits[0, 2].sigmoid() > 0.5
    assert region[h // 2:].all() and not region[: h // 2].any()
    # without scores (masks named as given) nothing is added
    probs, _, _ = model.predict_masks(images, masks)
    assert probs.shape[1] == 2
    with pytest.raises(ValueError, match="B x Q"):
        model.predict_masks(images, masks, scores[:, :1])


def test_leftover_region_is_cut_where_its_tiles_are_named_differently(monkeypatch):
    torch.manual_seed(0)
    opts = ("MODEL.TEST.LEFTOVER_REGIONS", "1", "MODEL.TEST.LEFTOVER_SPLIT.GRID", "4",
            "MODEL.TEST.LEFTOVER_SPLIT.EXTERNAL_MASKS", "True")
    model = build_model(tiny_cfg(*opts)).eval()
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))[:1]
    images, sizes = model._images(batch)
    h, w = images.shape[-2:]
    masks = torch.zeros(1, 1, h, w)
    masks[0, 0, : h // 2] = 1.0  # the bottom half is left over
    scores = torch.tensor([[0.9]])
    real = model._name_masks
    calls = []

    def name(feats, mask_probs, text, images):  # tiles: class 3 on the left, 5 on the right
        logits = real(feats, mask_probs, text, images)
        calls.append(mask_probs.shape[1])
        if len(calls) == 1:
            xs = torch.arange(mask_probs.shape[-1]).to(mask_probs)
            cx = (mask_probs.sum(-2) * xs).sum(-1) / mask_probs.sum((-2, -1)).clamp_min(1e-6)
            logits = torch.full_like(logits, -10.0)
            logits[..., 3] = torch.where(cx < mask_probs.shape[-1] / 2, 10.0, -10.0)
            logits[..., 5] = torch.where(cx < mask_probs.shape[-1] / 2, -10.0, 10.0)
        return logits

    monkeypatch.setattr(model, "_name_masks", name)
    probs, objectness, logits = model.predict_masks(images, masks, scores, image_sizes=sizes)
    assert calls == [8, 3]  # 8 tiles (2 rows x 4) named, then the mask and the 2 parts
    assert probs.shape[1] == 3 and torch.allclose(objectness, torch.ones(1, 3) * torch.tensor(
        [0.9, 1.0, 1.0]))
    left, right = logits[0, 1].sigmoid() > 0.5, logits[0, 2].sigmoid() > 0.5
    assert left[h // 2:, : w // 2].all() and not left[:, w // 2:].any()
    assert right[h // 2:, w // 2:].all() and not right[:, : w // 2].any()
    # without the split the region stays whole
    # after external masks only with EXTERNAL_MASKS (the test so far ran with it on)
    monkeypatch.setattr(model, "leftover_split", (4, 2, 0.5, 0.25, False))
    probs, _, _ = model.predict_masks(images, masks, scores, image_sizes=sizes)
    assert probs.shape[1] == 2
    monkeypatch.setattr(model, "leftover_split", (0, 2, 0.5, 0.25, True))
    calls.clear()
    probs, _, logits = model.predict_masks(images, masks, scores, image_sizes=sizes)
    assert probs.shape[1] == 2 and (logits[0, 1].sigmoid() > 0.5)[h // 2:].all()
    # what the generator's own masks leave is cut without EXTERNAL_MASKS: the tiles of its
    # leftover (here made the bottom half) are named first, in a call of their own
    def bottom_half(mask_probs, objectness, k, min_area, valid):
        out = mask_probs.new_zeros(mask_probs.shape[0], k, *mask_probs.shape[-2:])
        out[:, 0, mask_probs.shape[-2] // 2:] = 1.0
        found = torch.zeros(out.shape[:2], dtype=torch.bool)
        found[:, 0] = True
        return out, found

    monkeypatch.setattr(meta, "leftover_masks", bottom_half)
    monkeypatch.setattr(model, "leftover_split", (4, 2, 0.5, 0.25, False))
    calls.clear()
    probs, _, _ = model.predict_masks(images, image_sizes=sizes)
    assert calls == [8, probs.shape[1]]  # 8 tiles; then the generator's masks and the part(s)
    for key, value in (("PARTS", "0"), ("GRID", "1"), ("MIN_FILL", "0.0")):
        with pytest.raises(ValueError, match="LEFTOVER_SPLIT"):
            build_model(tiny_cfg(f"MODEL.TEST.LEFTOVER_SPLIT.{key}", value))


def test_model_refines_its_masks_before_naming_them():
    torch.manual_seed(0)
    plain = build_model(tiny_cfg()).eval()
    refined = build_model(tiny_cfg("MODEL.TEST.MASK_REFINE.ENABLED", "True",
                                   "MODEL.TEST.LEFTOVER_REGIONS", "1")).eval()
    refined.load_state_dict(plain.state_dict())  # nothing of its own to load
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))
    images, sizes = plain._images(batch)
    _, _, m0 = plain.predict_masks(images, image_sizes=sizes)
    p1, o1, m1 = refined.predict_masks(images, image_sizes=sizes)
    q = m0.shape[1]
    assert m0.shape[-2:] == (images.shape[-2] // 4, images.shape[-1] // 4)
    assert m1.shape[-2:] == images.shape[-2:] and m1.shape[1] == q + 1
    assert p1.shape[:2] == o1.shape == (len(batch), q + 1)
    up = F.interpolate(m0, size=images.shape[-2:], mode="bilinear", align_corners=False)
    assert not torch.allclose(m1[:, :q], up, atol=1e-2)
    out = refined(batch)[0]
    h, w = batch[0]["height"], batch[0]["width"]
    assert out["sem_seg"].shape == (70, h, w) and out["panoptic_seg"][0].shape == (h, w)
    # external masks (e.g. SAM's) are named as given
    ext = torch.rand(len(batch), 2, *images.shape[-2:])
    _, _, me = refined.predict_masks(images, ext)
    assert torch.allclose(me, torch.logit(ext, eps=1e-4))
    with pytest.raises(ValueError, match="MODEL.TEST.MASK_REFINE"):
        build_model(tiny_cfg("MODEL.TEST.MASK_REFINE.ENABLED", "True",
                             "MODEL.TEST.MASK_REFINE.EPS", "0.0"))


def test_ensemble_can_be_limited_to_some_tasks():
    torch.manual_seed(0)
    keep_all = ("MODEL.TEST.OBJECT_MASK_THRESHOLD", "0.0",  # untrained: let segments through
                "MODEL.TEST.OVERLAP_THRESHOLD", "0.0")
    cfg = tiny_cfg("MODEL.ENSEMBLE.ENABLED", "True", "MODEL.ENSEMBLE.TASKS", '("semantic",)',
                   *keep_all)
    model = build_model(cfg).eval()
    batch = next(iter(build_test_loader(cfg, "shapes_ov_val")))
    assert model.ensemble_for("semantic") and not model.ensemble_for("panoptic")
    images, sizes = model._images(batch)
    with_ens, obj, _ = model.predict_masks(images, image_sizes=sizes)
    without, obj2, _ = model.predict_masks(images, image_sizes=sizes, ensemble=False)
    assert not torch.allclose(with_ens, without) and torch.equal(obj, obj2)
    # forward: the semantic map from the ensemble, the panoptic segments from the classifier alone
    out = model(batch)[0]
    everywhere = build_model(tiny_cfg("MODEL.ENSEMBLE.ENABLED", "True", *keep_all))
    nowhere = build_model(tiny_cfg("MODEL.ENSEMBLE.ENABLED", "False", *keep_all))
    for m in (everywhere, nowhere):
        m.load_state_dict(model.state_dict())
        m.eval()
    ref_sem = everywhere(batch)[0]["sem_seg"]
    ref_pan = nowhere(batch)[0]["panoptic_seg"]
    # the two references differ, so matching one of them says which setting a task used
    assert not torch.allclose(ref_sem, nowhere(batch)[0]["sem_seg"])
    assert ref_pan[1] and everywhere(batch)[0]["panoptic_seg"][1] != ref_pan[1]
    assert torch.allclose(out["sem_seg"], ref_sem)
    assert torch.equal(out["panoptic_seg"][0], ref_pan[0]) and out["panoptic_seg"][1] == ref_pan[1]
    with pytest.raises(ValueError, match="ENSEMBLE.TASKS"):
        build_model(tiny_cfg("MODEL.ENSEMBLE.TASKS", '("semantics",)'))


def test_sam_as_the_segmentors_own_generator_is_one_clear_error():
    # SAM names no CLIP features; it joins at inference (--generator sam), not as the trained one
    with pytest.raises(ValueError, match="--generator sam"):
        build_model(tiny_cfg("MODEL.MASK_GENERATOR.NAME", "SAM"))


def test_masks_are_cut_at_necks_where_the_parts_name_different_things(monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.TEST.NECK_SPLIT.ENABLED", "True")).eval()
    batch = next(iter(build_test_loader(tiny_cfg(), "shapes_ov_val")))[:2]
    images, _ = model._images(batch)
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    disc = lambda cx: ((ys - h / 2) ** 2 + (xs - cx) ** 2 <= (w / 6) ** 2).float()  # noqa: E731
    two = torch.maximum(disc(w / 2 - w / 6.3), disc(w / 2 + w / 6.3))  # joined by a narrow neck
    probs = torch.full((2, 3, h, w), 0.01)
    probs[:, 0] = two.clamp(0.01, 0.99)
    probs[:, 1, :4, :4] = 0.99  # a small convex mask: never cut
    mask_logits = torch.logit(probs)
    gen_logits = torch.randn(2, 3, model.text_embeddings().shape[0] + 1)
    names = {"thing": (3, 5), "same": (3, 3), "stuff": (3, len(model.is_thing) - 1)}
    mode = []

    def name(feats, mask_probs, text, images):  # parts named by the side they lie on
        side = mask_probs.shape[-1]
        cols = torch.arange(side).to(mask_probs)
        cx = (mask_probs.sum(-2) * cols).sum(-1) / mask_probs.sum((-2, -1)).clamp_min(1e-6)
        logits = torch.full((*mask_probs.shape[:2], len(model.is_thing) + 1), -10.0)
        left, right = names[mode[-1]]
        logits[..., left] = 5.0
        logits[..., right] = torch.where(cx < side / 2, 0.0, 10.0)
        return logits

    monkeypatch.setattr(model, "_name_masks", name)
    assert not model.is_thing[-1] and model.is_thing[3] and model.is_thing[5]
    feats, text = model.backbone(images), model.text_embeddings()
    mode.append("thing")
    masks, gens = model._split_necks(feats, text, images, mask_logits, gen_logits)
    assert masks.shape == (2, 4, h, w) and gens.shape == (2, 4, gen_logits.shape[-1])
    left, right = masks[:, 0].sigmoid() > 0.5, masks[:, 3].sigmoid() > 0.5
    assert torch.equal(left | right, (two > 0.5).expand(2, h, w)) and not (left & right).any()
    assert not left[:, :, w // 2 + 1:].any() and not right[:, :, : w // 2 - 1].any()
    assert torch.equal(masks[:, 1:3], mask_logits[:, 1:3])  # the others untouched
    assert torch.equal(gens[:, 1:3], gen_logits[:, 1:3])
    # the parts keep the mask's void probability, spread evenly over the classes
    void = gen_logits[:, 0].softmax(-1)[:, -1]
    for j in (0, 3):
        p = gens[:, j].softmax(-1)
        assert torch.allclose(p[:, -1], void, atol=1e-5)
        assert torch.allclose(p[:, :-1], ((1 - void) / (p.shape[-1] - 1))[:, None].expand_as(
            p[:, :-1]), atol=1e-6)
    # parts named alike, or with a stuff name, leave the mask whole
    for kind in ("same", "stuff"):
        mode.append(kind)
        masks, gens = model._split_necks(feats, text, images, mask_logits, gen_logits)
        assert torch.equal(masks, mask_logits) and torch.equal(gens, gen_logits)
    # only one image of the batch cut: the other gets an empty all-void slot
    mode.append("thing")
    one = mask_logits.clone()
    one[1, 0] = torch.logit(torch.full((h, w), 0.01))
    masks, gens = model._split_necks(feats, text, images, one, gen_logits)
    assert masks.shape[1] == 4 and (masks[1, 3].sigmoid() < 1e-3).all()
    assert gens[1, 3].softmax(-1)[-1] > 0.999
    # end to end: the outputs carry the extra masks
    probs_out, objectness, logits_out = model.predict_masks(images)
    assert probs_out.shape[:2] == objectness.shape == logits_out.shape[:2]
    with pytest.raises(ValueError, match="NECK_SPLIT"):
        build_model(tiny_cfg("MODEL.TEST.NECK_SPLIT.ENABLED", "True",
                             "MODEL.TEST.NECK_SPLIT.DEPTH", "1.0"))
