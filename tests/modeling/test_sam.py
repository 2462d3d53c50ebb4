"""SAM mask generator: building, checkpoints, automatic and prompted modes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, build_sam_vit_b

from mmmask.config import get_cfg, load_cfg
from mmmask.modeling.mask_generators.sam import SamImageEmbedding, SAMMaskGenerator
from mmmask.modeling.mask_generators.sam_build import (
    SAM_VARIANTS,
    build_sam_model,
    describe_sam_state_dict,
    load_sam_checkpoint,
)
from mmmask.modeling.mask_generators.sam_prompts import (
    as_prompt_tensors,
    correction_clicks,
    mask_iou,
    masks_to_boxes,
    sample_points,
)
from mmmask.registry import MASK_GENERATOR_REGISTRY

TINY = dict(
    variant="custom", image_size=64, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=[1], patch_size=8, prompt_embed_dim=32, window_size=4,
    decoder_mlp_dim=64, decoder_num_heads=2,
)
# Random weights give near-zero logits (every mask unstable); sharper logits give masks that
# pass the stability filter. The masks are not meaningful, only identical between the paths.
LOGIT_GAIN = 1000.0
# Thresholds lowered for random weights, whose masks all span the image: box NMS at 1.0 keeps
# them (the default 0.7 would leave one).
AMG = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5, box_nms_thresh=1.0)


def _sharpen(sam):
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(LOGIT_GAIN)
    return sam


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    img = np.full((h, w, 3), 20, np.uint8)
    img[4:20, 4:24] = [220, 40, 40]
    img[26:44, 30:60] = [40, 200, 60]
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 14) ** 2 + (xx - 46) ** 2 < 64] = [40, 60, 230]
    return img


@pytest.fixture(scope="module")
def tiny_sam():
    torch.manual_seed(0)
    return _sharpen(build_sam_model(**TINY))


def _assert_same_records(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        iou = mask_iou(torch.from_numpy(a["segmentation"]), torch.from_numpy(b["segmentation"]))
        assert float(iou) >= 0.99
        assert a["bbox"] == b["bbox"] and a["area"] == b["area"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-5)


# ---- building and checkpoints ----------------------------------------------------------------
def test_variant_table_matches_official_builders():
    numbers = {k: (v.encoder_embed_dim, v.encoder_depth, v.encoder_num_heads)
               for k, v in SAM_VARIANTS.items()}
    assert numbers == {"vit_b": (768, 12, 12), "vit_l": (1024, 24, 16), "vit_h": (1280, 32, 16)}
    assert SAM_VARIANTS["vit_l"].encoder_global_attn_indexes == (5, 11, 17, 23)
    with torch.device("meta"):  # shapes only, no memory
        official, ours = build_sam_vit_b(), build_sam_model("vit_b")
    ref = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref
    assert describe_sam_state_dict(ours.state_dict()).startswith("vit_b (embed 768, depth 12")


def test_unknown_variant_and_bad_custom_numbers():
    with pytest.raises(ValueError, match="vit_b"):
        build_sam_model("vit_x")
    with pytest.raises(ValueError, match="ENCODER_GLOBAL_ATTN_INDEXES"):
        build_sam_model(**{**TINY, "encoder_global_attn_indexes": [5]})
    with pytest.raises(ValueError, match="IMAGE_SIZE"):
        build_sam_model(**{**TINY, "image_size": 60})


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, tiny_sam, suffix):
    path = tmp_path / f"sam{suffix}"
    state = {f"sam.{k}": v.contiguous() for k, v in tiny_sam.state_dict().items()}  # trainer keys
    if suffix == ".pth":
        torch.save({"model": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = build_sam_model(**TINY, checkpoint=str(path))
    for k, v in tiny_sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_missing_checkpoint_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.SAM.CHECKPOINT"):
        build_sam_model(**TINY, checkpoint=str(tmp_path / "nope.pth"))


def test_wrong_variant_checkpoint_says_what_it_looks_like(tmp_path):
    fake_vit_b = {  # just what identifies an encoder: pos_embed, patch_embed, block count
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, 768),
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "image_encoder.blocks.11.norm1.weight": torch.zeros(768),
    }
    torch.save(fake_vit_b, tmp_path / "vit_b.pth")
    with pytest.raises(ValueError, match=r"looks like SAM vit_b.*configured model is SAM custom"):
        build_sam_model(**TINY, checkpoint=str(tmp_path / "vit_b.pth"))
    deeper = build_sam_model(**{**TINY, "encoder_depth": 3})
    torch.save(deeper.state_dict(), tmp_path / "deep.pth")
    sam = build_sam_model(**TINY)
    with pytest.raises(ValueError, match=r"custom \(embed 32, depth 3"):
        load_sam_checkpoint(sam, str(tmp_path / "deep.pth"))


def test_registry_builds_from_config():
    cfg = get_cfg()
    cfg.MODEL.SAM.IMAGE_SIZE = 64
    gen = MASK_GENERATOR_REGISTRY.get("SAM")(cfg)
    assert isinstance(gen, SAMMaskGenerator)
    assert gen.sam.image_encoder.img_size == 64
    assert gen.amg_settings["points_per_side"] == cfg.MODEL.SAM.POINTS_PER_SIDE
    vit_b = load_cfg("configs/sam/vit_b.yaml", freeze=False)
    assert vit_b.MODEL.SAM.VARIANT == "vit_b" and vit_b.MODEL.SAM.CHECKPOINT.endswith(".pth")
    with pytest.raises(FileNotFoundError, match="MODEL.SAM.CHECKPOINT"):
        MASK_GENERATOR_REGISTRY.get("SAM")(vit_b)


# ---- automatic mode --------------------------------------------------------------------------
@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_automatic_equals_sam_automatic_mask_generator(tiny_sam, crop_n_layers):
    img = _scene()
    settings = {**AMG, "crop_n_layers": crop_n_layers, "points_per_side": 4 - 2 * crop_n_layers}
    ours = SAMMaskGenerator(sam=tiny_sam, **settings).generate(img)
    ref = SamAutomaticMaskGenerator(tiny_sam, **settings).generate(img)
    if crop_n_layers == 0:  # (across crops, NMS at 0.7 merges these image-wide masks)
        assert len(ours) >= 5 and len({r["area"] for r in ours}) >= 5  # distinct masks
    _assert_same_records(ours, ref)
    rec = ours[0]
    assert rec["segmentation"].dtype == bool and rec["segmentation"].shape == img.shape[:2]
    assert len(rec["bbox"]) == 4 and rec["point_coords"][0][0] <= img.shape[1]


def test_automatic_equals_reference_vit_b_shaped():
    """ViT-B encoder numbers (768 wide, 12 deep, 12 heads) at a 128 px input to bound the cost."""
    torch.manual_seed(1)
    sam = _sharpen(build_sam_model("vit_b", image_size=128))
    img = _scene()
    settings = {**AMG, "points_per_side": 2}
    ours = SAMMaskGenerator(sam=sam, **settings).generate(img)
    ref = SamAutomaticMaskGenerator(sam, **settings).generate(img)
    assert len(ours) >= 3
    _assert_same_records(ours, ref)


def test_proposals_form(tiny_sam):
    gen = SAMMaskGenerator(sam=tiny_sam, **AMG)
    img = _scene()
    masks, scores = gen.proposals(torch.from_numpy(img).permute(2, 0, 1))  # [3, H, W] accepted
    records = gen.generate(img)
    assert masks.shape == (1, len(records), 48, 64) and scores.shape == (1, len(records))
    assert masks.dtype == torch.float32 and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(scores[0, :-1] >= scores[0, 1:])  # best first
    strict = SAMMaskGenerator(sam=tiny_sam, points_per_side=2, pred_iou_thresh=50.0)
    empty, s = strict.proposals(img)
    assert empty.shape == (1, 0, 48, 64) and s.shape == (1, 0)


def test_small_region_removal_needs_opencv(tiny_sam):
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="MIN_MASK_REGION_AREA"):
            SAMMaskGenerator(sam=tiny_sam, min_mask_region_area=10)


# ---- prompted mode ---------------------------------------------------------------------------
def test_batched_prompts_equal_per_prompt_predictor(tiny_sam):
    img = _scene()
    gen = SAMMaskGenerator(sam=tiny_sam)
    coords = np.array([[[10, 10], [50, 40]], [[46, 14], [5, 40]], [[30, 30], [60, 5]]], float)
    labels = np.array([[1, 0], [1, 1], [1, 0]])
    boxes = np.array([[2, 2, 25, 22], [35, 4, 60, 25], [28, 24, 62, 46]], float)
    batched = gen.predict(img, point_coords=coords, point_labels=labels, boxes=boxes)
    assert batched.masks.shape == (3, 3, 48, 64) and batched.masks.dtype == torch.bool
    assert batched.iou_preds.shape == (3, 3) and batched.low_res_logits.shape == (3, 3, 32, 32)
    ref = SamPredictor(tiny_sam)
    ref.set_image(img)
    single = gen.predict(point_coords=coords, point_labels=labels, multimask_output=False)
    prev = single.low_res_logits  # [3, 1, 32, 32]
    refined = gen.predict(boxes=boxes, mask_input=prev, multimask_output=False)
    for i in range(3):
        m, q, low = ref.predict(coords[i], labels[i], box=boxes[i])
        assert np.allclose(batched.low_res_logits[i].numpy(), low, atol=1e-3, rtol=1e-4)
        assert np.allclose(batched.iou_preds[i].numpy(), q, atol=1e-5)
        assert (batched.masks[i].numpy() == m).mean() > 0.999
        m, q, low = ref.predict(coords[i], labels[i], multimask_output=False)
        assert np.allclose(single.low_res_logits[i].numpy(), low, atol=1e-3, rtol=1e-4)
        m, q, low = ref.predict(box=boxes[i], mask_input=prev[i].numpy(), multimask_output=False)
        assert np.allclose(refined.low_res_logits[i].numpy(), low, atol=1e-3, rtol=1e-4)


def test_image_embedding_is_cached(tiny_sam):
    gen = SAMMaskGenerator(sam=tiny_sam)
    calls = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        img = _scene()
        pts, lab = np.array([[[10.0, 10.0]]]), np.array([[1]])
        first = gen.predict(img, point_coords=pts, point_labels=lab)
        gen.predict(img.copy(), point_coords=pts, point_labels=lab)  # same content
        emb = gen.get_image_embedding()
        assert isinstance(emb, SamImageEmbedding) and len(calls) == 1
        gen.predict(255 - img, point_coords=pts, point_labels=lab)  # another image
        assert len(calls) == 2
        again = gen.predict(emb, point_coords=pts, point_labels=lab)  # restored, no encoder pass
        assert len(calls) == 2
        assert torch.equal(first.low_res_logits, again.low_res_logits)
    finally:
        hook.remove()


def test_bad_prompts(tiny_sam):
    gen = SAMMaskGenerator(sam=tiny_sam)
    with pytest.raises(RuntimeError, match="set_image"):
        gen.predict(point_coords=[[[1, 1]]], point_labels=[[1]])
    gen.set_image(_scene())  # 48 x 64
    with pytest.raises(ValueError, match=r"H=48, W=64.*\[70\.0, 5\.0\]"):
        gen.predict(point_coords=[[[70, 5]]], point_labels=[[1]])
    with pytest.raises(ValueError, match=r"boxes outside.*H=48, W=64"):
        gen.predict(boxes=[[0, 0, 10, 90]])
    with pytest.raises(ValueError, match="empty"):
        gen.predict(point_coords=np.zeros((0, 1, 2)), point_labels=np.zeros((0, 1)))
    with pytest.raises(ValueError, match="empty"):
        gen.predict(boxes=np.zeros((0, 4)))
    with pytest.raises(ValueError, match="No prompt"):
        gen.predict()
    with pytest.raises(ValueError, match="point_labels must be"):
        gen.predict(point_coords=[[[1, 1], [2, 2]]], point_labels=[[1]])
    with pytest.raises(ValueError, match="disagree"):
        gen.predict(point_coords=[[[1, 1]]], point_labels=[[1]], boxes=[[0, 0, 5, 5]] * 2)
    with pytest.raises(ValueError, match="mask_input"):
        gen.predict(mask_input=np.zeros((1, 1, 256, 256)))
    with pytest.raises(ValueError, match="uint8"):
        gen.set_image(np.zeros((8, 8, 3), np.float32))


# ---- prompt utilities ------------------------------------------------------------------------
def test_prompt_utilities():
    gt = torch.zeros(2, 20, 30, dtype=torch.bool)
    gt[0, 2:8, 3:10] = True
    gt[1, 10:19, 5:25] = True
    assert masks_to_boxes(gt).tolist() == [[3, 2, 9, 7], [5, 10, 24, 18]]
    torch.manual_seed(0)
    for mode in ("random", "center"):
        pts = sample_points(gt, mode).long()
        assert gt[torch.arange(2), pts[:, 1], pts[:, 0]].all()
    pred = gt.clone()
    pred[0] = False  # object 0 missed: positive click inside it
    pred[1, 0:9, :] = True  # object 1 overgrown above: negative click there
    for mode in ("random", "center"):
        xy, lab = correction_clicks(pred, gt, mode)
        assert lab.tolist() == [1, 0]
        assert gt[0, int(xy[0, 1]), int(xy[0, 0])] and not gt[1, int(xy[1, 1]), int(xy[1, 0])]
    coords, labels, boxes, masks, n = as_prompt_tensors((20, 30), [[[1, 2]]], [[1]])
    assert n == 1 and coords.shape == (1, 1, 2) and boxes is None and masks is None
