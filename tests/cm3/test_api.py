import numpy as np
import pytest
import torch

from mmmask.cm3.api import CM3Generator, as_rgb_uint8
from mmmask.cm3.documents import build_document, masked_prompt
from mmmask.cm3.generate import generate_reference
from mmmask.cm3.regions import box_to_mask, cells_to_spans, mask_to_cells
from mmmask.config import get_cfg


def test_box_and_mask_to_cells():
    m = box_to_mask((8, 0, 16, 8), 32, 32)
    assert m.sum() == 64 and m[0, 8] and not m[0, 7] and not m[8, 8]
    cells = mask_to_cells(m, (4, 4))  # 8 px per cell
    want = np.zeros((4, 4), bool)
    want[0, 1] = True
    assert np.array_equal(cells, want)
    # one pixel touching a cell selects it; non-divisible sizes work
    m = np.zeros((30, 50), bool)
    m[29, 49] = True
    m[0, 0] = True
    c = mask_to_cells(m, (8, 8))
    assert c[7, 7] and c[0, 0] and c.sum() == 2
    m = np.zeros((32, 32), bool)
    m[7:9, 7:9] = True  # straddles four cells
    assert mask_to_cells(m, (4, 4)).sum() == 4
    with pytest.raises(ValueError):
        box_to_mask((5, 5, 5, 9), 10, 10)
    with pytest.raises(ValueError):
        mask_to_cells(np.zeros((2, 2, 2)), (2, 2))


def test_cells_to_spans_merges_runs():
    cells = np.zeros((4, 4), bool)
    cells[1, 1:3] = True
    cells[2, 1:3] = True
    assert cells_to_spans(cells, 3) == [(5, 7), (9, 11)]
    assert cells_to_spans(cells, 1) == [(5, 11)]  # the row-major span covering both
    cells[0, 0] = True  # a third run, far from the others
    assert cells_to_spans(cells, 2) == [(0, 1), (5, 11)]
    assert cells_to_spans(np.zeros((2, 2), bool), 2) == []


def test_as_rgb_uint8():
    assert as_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert as_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert as_rgb_uint8(np.ones((2, 2, 3), np.float32))[0, 0, 0] == 255
    with pytest.raises(ValueError):
        as_rgb_uint8(np.zeros((4, 5, 2)))


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE = 32, 8
    cfg.CM3.VQ.HIDDEN_DIM, cfg.CM3.VQ.CODEBOOK_SIZE, cfg.CM3.VQ.CODEBOOK_DIM = 8, 16, 8
    cfg.CM3.N_LAYER, cfg.CM3.N_HEAD, cfg.CM3.N_EMBD, cfg.CM3.BLOCK_SIZE = 2, 2, 32, 128
    cfg.CM3.GENERATE.MAX_TEXT_TOKENS = 12
    cfg.MODEL.DEVICE = "cpu"
    g = CM3Generator.from_config(cfg, weights="")
    g.vq.train()
    g.vq.losses(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))  # k-means init
    g.vq.eval()
    return g


def test_generator_tasks_shapes(gen):
    img = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    cap = gen.caption(img)
    assert isinstance(cap, str) and len(cap.encode()) <= 3 * 12
    out = gen.text_to_image("a red star", seed=3)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, gen.text_to_image("a red star", seed=3))  # seeded
    filled = gen.infill_text("a [MASK] star on [MASK]", image=img)
    assert filled.startswith("a ") and " star on " in filled
    assert isinstance(gen.infill_text(["a ", " ring"]), str)
    with pytest.raises(ValueError):
        gen.infill_text("no gap here")


def test_infill_image_keeps_outside_pixels(gen):
    img = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    mask = np.zeros((40, 30), bool)
    mask[5:15, 10:20] = True
    out = gen.infill_image(img, mask, "a blue ring", seed=0)
    assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask])
    box = gen.infill_image(img, (10, 5, 20, 15), None, seed=0)
    assert np.array_equal(box[~mask], img[~mask])
    edit = gen.edit_region(img, mask, "a yellow hexagon")
    assert np.array_equal(edit[~mask], img[~mask])
    with pytest.raises(ValueError):
        gen.edit_region(img, mask, " ")
    with pytest.raises(ValueError):
        gen.infill_image(img, np.zeros((40, 30), bool))
    with pytest.raises(ValueError):
        gen.infill_image(img, np.ones((10, 10), bool))


def test_infill_codes_regenerates_only_spans_and_matches_reference(gen):
    codes = torch.randint(0, 16, (4, 4))
    cells = np.zeros((4, 4), bool)
    cells[1, 1:3] = True
    cells[3, 0] = True
    new = gen.infill_codes(codes, cells, "a red star", temperature=0, cfg_scale=1.0)
    keep = ~torch.from_numpy(cells)
    assert torch.equal(new[keep], codes[keep])
    # span 0 equals greedy reference decoding of the CM3 prompt (left AND right context)
    v = gen.vocab
    doc = build_document(v, "a red star", codes)
    off = doc.image_span[0]
    prompt = masked_prompt(v, doc.ids, [(off + 5, off + 7), (off + 12, off + 13)])
    assert prompt[-1] == v.sentinel(0) and prompt.count(v.sentinel(0)) == 2
    ref = generate_reference(gen.model, torch.tensor([prompt]), 2, temperature=0,
                             allowed_ids=v.image_mask())[0, -2:] - v.image_offset
    assert torch.equal(new.reshape(-1)[5:7], ref)


def test_infill_with_a_long_prompt_and_several_spans_fits_the_block(gen):
    """The alt text is cut to leave room for the spans' sentinels (a caption-length prompt
    plus three spans used to overflow the block)."""
    codes = torch.randint(0, 16, (4, 4))
    cells = np.zeros((4, 4), bool)
    cells[0, 0] = cells[1, 2] = cells[3, 1] = True
    assert len(cells_to_spans(cells, gen.max_spans)) == 3
    prompt = " ".join(["a red star on the grass"] * 40)
    new = gen.infill_codes(codes, cells, prompt, temperature=0, cfg_scale=3.0)
    keep = ~torch.from_numpy(cells)
    assert new.shape == (4, 4) and torch.equal(new[keep], codes[keep])


def test_from_config_loads_whole_model_checkpoint(gen, tmp_path):
    from mmmask.utils.weights import save_safetensors

    cfg = get_cfg()
    cfg.CM3.VQ.IMAGE_SIZE, cfg.CM3.VQ.DOWNSAMPLE = 32, 8
    cfg.CM3.VQ.HIDDEN_DIM, cfg.CM3.VQ.CODEBOOK_SIZE, cfg.CM3.VQ.CODEBOOK_DIM = 8, 16, 8
    cfg.CM3.N_LAYER, cfg.CM3.N_HEAD, cfg.CM3.N_EMBD, cfg.CM3.BLOCK_SIZE = 2, 2, 32, 128
    cfg.CM3.VQ.WEIGHTS = "missing/vq.safetensors"  # not read: the checkpoint holds the VQ
    cfg.MODEL.DEVICE = "cpu"
    state = {f"vq.{k}": v for k, v in gen.vq.state_dict().items()}
    state.update({f"transformer.{k}": v for k, v in gen.model.state_dict().items()})
    del state["transformer.lm_head.weight"]  # tied weights may be stored once
    path = str(tmp_path / "cm3.safetensors")
    save_safetensors(state, path)
    loaded = CM3Generator.from_config(cfg, weights=path)
    assert np.array_equal(loaded.text_to_image("a red star", seed=1),
                          gen.text_to_image("a red star", seed=1))
    cfg.CM3.VQ.CODEBOOK_SIZE = 32
    with pytest.raises(ValueError, match="vocabulary"):
        CM3Generator.from_config(cfg, weights=path)
