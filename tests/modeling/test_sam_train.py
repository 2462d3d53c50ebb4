"""SAM training with simulated prompts (SAMTrainer), freezing, click evaluation, the config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmmask.config import load_cfg
from mmmask.modeling.mask_generators.sam_build import build_sam_model
from mmmask.modeling.mask_generators.sam_train import SAMTrainer, evaluate_clicks
from mmmask.registry import META_ARCH_REGISTRY

TINY = dict(
    variant="custom", image_size=64, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=[1], patch_size=8, prompt_embed_dim=32, window_size=4,
    decoder_mlp_dim=64, decoder_num_heads=2,
)


def _sample(seed: int, size: int = 48) -> dict:
    """Coloured rectangles on a dark background; later ones occlude earlier ones."""
    g = np.random.default_rng(seed)
    img = np.full((size, size, 3), 30, np.uint8)
    masks = []
    for _ in range(3):
        x0, y0 = g.integers(0, size - 16, 2)
        s = int(g.integers(10, 18))
        img[y0 : y0 + s, x0 : x0 + s] = g.integers(90, 255, 3)
        m = np.zeros((size, size), bool)
        m[y0 : y0 + s, x0 : x0 + s] = True
        masks = [prev & ~m for prev in masks] + [m]
    return {
        "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
        "height": size,
        "width": size,
        "instances": {
            "masks": torch.from_numpy(np.stack(masks)),
            "classes": torch.arange(3),
            "is_thing": torch.ones(3, dtype=torch.bool),
        },
    }


def _trainer(**kw) -> SAMTrainer:
    torch.manual_seed(0)
    args = dict(max_masks_per_image=3, num_correction_clicks=1, box_prompt_prob=0.5)
    return SAMTrainer(sam=build_sam_model(**TINY), **{**args, **kw}).train()


def _step(model, batch, opt, seed):
    torch.manual_seed(seed)
    losses = model(batch)
    total = sum(losses.values())
    opt.zero_grad()
    total.backward()
    opt.step()
    return losses, float(total.detach())


def test_training_steps_lower_the_loss():
    model = _trainer()
    batch = [_sample(i) for i in range(2)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses, first = _step(model, batch, opt, 0)
    assert set(losses) == {"loss_sam_focal", "loss_sam_dice", "loss_sam_iou"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    totals = [_step(model, batch, opt, 0)[1] for _ in range(10)]  # same prompts every step
    assert min(totals[-3:]) < 0.8 * first


def test_freezing_keeps_encoders_unchanged():
    model = _trainer(freeze_image_encoder=True, freeze_prompt_encoder=True)
    sam = model.sam
    assert not any(p.requires_grad for p in sam.image_encoder.parameters())
    assert not any(p.requires_grad for p in sam.prompt_encoder.parameters())
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for i in range(2):
        _step(model, [_sample(i)], opt, i)
    after = sam.state_dict()
    for k, v in before.items():
        if k.startswith(("image_encoder.", "prompt_encoder.")):
            assert torch.equal(after[k], v), k
    decoder = [k for k in before if k.startswith("mask_decoder.")]
    assert any(not torch.equal(after[k], before[k]) for k in decoder)


def test_batch_without_instances_gives_zero_loss():
    model = _trainer()
    sample = _sample(0)
    sample["instances"]["masks"] = torch.zeros(0, 48, 48, dtype=torch.bool)
    losses = model([sample])
    total = sum(losses.values())
    assert float(total) == 0.0
    total.backward()  # still reaches the parameters


def test_eval_mode_predicts_one_mask_per_instance():
    model = _trainer().eval()
    batch = [_sample(3), _sample(4)]
    batch[1]["height"], batch[1]["width"] = 96, 96  # outputs at the requested size
    out = model(batch)
    inst = out[0]["instances"]
    assert inst["masks"].shape == (3, 48, 48) and inst["masks"].dtype == torch.bool
    assert inst["scores"].shape == (3,) and torch.equal(inst["classes"], torch.arange(3))
    assert out[1]["instances"]["masks"].shape == (3, 96, 96)


def test_evaluate_clicks_reports_miou_per_click_count():
    sam = build_sam_model(**TINY)
    samples = [_sample(5), (np.ascontiguousarray(_sample(6)["image"].permute(1, 2, 0).numpy()),
                            _sample(6)["instances"]["masks"].numpy())]
    res = evaluate_clicks(sam, samples, clicks=(1, 3))
    assert set(res) == {1, 3, "num_masks"} and res["num_masks"] == 6
    assert 0.0 <= res[1] <= 1.0 and 0.0 <= res[3] <= 1.0
    with pytest.raises(ValueError, match="clicks"):
        evaluate_clicks(sam, samples, clicks=(0,))


def test_shapes_config_builds_and_trains_one_step():
    cfg = load_cfg("configs/shapes/sam.yaml", opts=["MODEL.SAM.IMAGE_SIZE", 128])
    assert cfg.MODEL.META_ARCHITECTURE == "SAMTrainer"
    model = META_ARCH_REGISTRY.get("SAMTrainer")(cfg).train()
    assert model.sam.image_encoder.img_size == 128
    assert model.num_correction_clicks == cfg.MODEL.SAM.NUM_CORRECTION_CLICKS
    from mmmask.data.shapes import render_sample

    s = render_sample(0, "train", 0, size=64)
    masks = torch.from_numpy(np.stack([o["mask"] for o in s.instances])).bool()
    batch = [{"image": torch.from_numpy(s.image).permute(2, 0, 1).contiguous(), "height": 64,
              "width": 64, "instances": {"masks": masks, "classes": torch.zeros(len(masks)).long(),
                                         "is_thing": torch.ones(len(masks), dtype=torch.bool)}}]
    total = sum(model(batch).values())
    total.backward()
    assert torch.isfinite(total)
