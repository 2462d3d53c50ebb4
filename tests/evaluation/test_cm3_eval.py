"""evaluate_cm3 on a tiny random CM3 generator and a fake segmenter."""

import numpy as np
import pytest
import torch

from mmmask.cm3.api import CM3Generator
from mmmask.config import get_cfg
from mmmask.data import shapes
from mmmask.evaluation.cm3_eval import evaluate_cm3
from mmmask.predictor import SegmentationResult


class _Judge:
    """Says every image shows a red star, filling the whole image; names every mask a yellow
    hexagon (one of the five objects of the first three test scenes at 32 px)."""

    def classify_masks(self, image, masks, vocab):
        probs = np.zeros((len(masks), len(vocab)))
        probs[:, shapes.CLASS_NAMES.index("yellow hexagon")] = 1.0
        return probs, list(vocab.labels)

    def predict(self, image, task="semantic"):
        h, w = image.shape[:2]
        cid = shapes.CLASS_NAMES.index("red star")
        seg = {"id": 1, "label": "red star", "class_id": cid, "score": 1.0,
               "mask": np.ones((h, w), bool)}
        return SegmentationResult(height=h, width=w, labels=list(shapes.CLASS_NAMES),
                                  task=task, segments=[seg])


def test_evaluate_cm3_reports_every_figure():
    cfg = get_cfg()
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE = 32, 8
    cfg.CM3.VQ.HIDDEN_DIM, cfg.CM3.VQ.CODEBOOK_SIZE, cfg.CM3.VQ.CODEBOOK_DIM = 8, 16, 8
    cfg.CM3.N_LAYER, cfg.CM3.N_HEAD, cfg.CM3.N_EMBD, cfg.CM3.BLOCK_SIZE = 1, 2, 32, 128
    cfg.CM3.GENERATE.MAX_TEXT_TOKENS = 8
    gen = CM3Generator.from_config(cfg, weights="")
    out = evaluate_cm3(gen, _Judge(), num_images=3, num_generated=4, seed=4242)
    assert 0 <= out["caption_attribute_accuracy"] <= 100
    for half in ("colour", "shape"):  # each half is named at least as often as both together
        assert out["caption_attribute_accuracy"] <= out[f"caption_{half}_accuracy"] <= 100
    assert 0 < out["codebook_usage"] <= 100 and out["code_perplexity"] >= 1
    assert np.isfinite(out["vq_psnr_db"])
    # the judge only ever sees red stars: accuracy = share of red-star prompts among the 4
    rng = np.random.default_rng(4242)
    things = [i for i, t in enumerate(shapes.IS_THING) if t]
    prompts = [int(rng.choice(things)) for _ in range(4)]
    red_star = shapes.CLASS_NAMES.index("red star")
    assert out["text_to_image_accuracy"] == 100.0 * prompts.count(red_star) / 4
    objects = [d["category_id"] for i in range(3)
               for d in shapes.render_sample(4242, "test", i, 32).instances if d["mask"].any()]
    share = 100.0 * objects.count(shapes.CLASS_NAMES.index("yellow hexagon")) / len(objects)
    assert share > 0
    assert out["object_naming_original"] == out["object_naming_reconstructed"] == share
    reds = sum(shapes.CLASS_NAMES[c].startswith("red ") for c in prompts)
    assert out["text_to_image_colour_accuracy"] == 100.0 * reds / 4
    assert out["num_generated"] == 4


@pytest.mark.parametrize("block_size", [160, 64])  # 64: the captions must be cut to fit
def test_evaluate_infilling_compares_both_sided_and_left_only_context(block_size):
    from mmmask.evaluation.cm3_eval import evaluate_infilling

    cfg = get_cfg()
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE = 32, 8
    cfg.CM3.VQ.HIDDEN_DIM, cfg.CM3.VQ.CODEBOOK_SIZE, cfg.CM3.VQ.CODEBOOK_DIM = 8, 16, 8
    cfg.CM3.N_LAYER, cfg.CM3.N_HEAD, cfg.CM3.N_EMBD, cfg.CM3.BLOCK_SIZE = 1, 2, 32, block_size
    gen = CM3Generator.from_config(cfg, weights="")
    out = evaluate_infilling(gen, num_images=3, seed=4242)
    for mode in ("masked", "left"):
        assert 0 <= out[f"infill_token_accuracy_{mode}"] <= 100
        assert np.isfinite(out[f"infill_region_psnr_{mode}_db"])
    assert out["infill_tokens"] > 0
    # Greedy decoding: the figures are a pure function of the weights.
    assert evaluate_infilling(gen, num_images=3, seed=4242) == out


def test_vq_shape_probe_learns_codes_that_carry_the_shape():
    from mmmask.evaluation.cm3_eval import vq_shape_probe

    crops = {}
    for i in range(120):
        img, _, cid = shapes.render_object_crop(7, i, 16)
        crops[img.tobytes()] = cid % len(shapes.SHAPES)

    def informative(batch):  # every code = the crop's shape id
        ids = [crops[b.permute(1, 2, 0).numpy().tobytes()] for b in batch]
        return torch.tensor(ids)[:, None, None].expand(-1, 4, 4)

    def blind(batch):  # the same code everywhere
        return torch.zeros(len(batch), 4, 4, dtype=torch.long)

    good = vq_shape_probe(informative, num_train=80, num_test=40, epochs=8, size=16,
                          num_codes=len(shapes.SHAPES))
    bad = vq_shape_probe(blind, num_train=80, num_test=40, epochs=8, size=16, num_codes=8)
    assert good["grid"] == [4, 4] and len(good["shape_accuracy"]) == 8
    assert good["shape_accuracy"][-1] == 100.0
    assert bad["shape_accuracy"][-1] < 50.0


def test_vq_shape_probe_on_scene_objects_reads_the_object_it_is_pointed_at():
    from mmmask.evaluation.cm3_eval import vq_shape_probe

    # An ideal 8x8 tokenizer for 32 px scenes: each cell's code is the shape (+1) of the thing
    # covering most of it, 0 for stuff. Told where each object is, the probe reads its shape;
    # codes that carry nothing leave it near chance.
    cells = {}
    for i in range(90):
        s = shapes.render_sample(7, "captions", i, 32)
        sem = torch.from_numpy(s.sem_seg.astype(np.int64))
        is_thing = torch.tensor(shapes.IS_THING)[sem.clamp(max=len(shapes.IS_THING) - 1)]
        code = torch.where(is_thing, sem % len(shapes.SHAPES) + 1, torch.zeros_like(sem))
        blocks = code.reshape(8, 4, 8, 4).permute(0, 2, 1, 3).reshape(8, 8, 16)
        cells[s.image.tobytes()] = torch.mode(blocks, dim=-1).values

    def informative(batch):
        return torch.stack([cells[b.permute(1, 2, 0).numpy().tobytes()] for b in batch])

    def blind(batch):
        return torch.zeros(len(batch), 8, 8, dtype=torch.long)

    good = vq_shape_probe(informative, num_train=60, num_test=30, epochs=10, size=32,
                          num_codes=len(shapes.SHAPES) + 1, kind="scene")
    bad = vq_shape_probe(blind, num_train=60, num_test=30, epochs=10, size=32, num_codes=9,
                         kind="scene")
    assert good["kind"] == "scene" and good["grid"] == [8, 8] and good["num_test_objects"] > 30
    assert good["shape_accuracy"][-1] > 60.0
    assert bad["shape_accuracy"][-1] < 40.0
    with pytest.raises(ValueError, match="kind"):
        vq_shape_probe(blind, num_train=2, num_test=2, size=16, kind="region")
