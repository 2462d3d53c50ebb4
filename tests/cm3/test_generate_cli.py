"""``mmmask generate``: caption / image / infill with tiny random-weight models, segment-then-edit,
and one-line errors that leave no output file behind."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmmask.cli import main
from mmmask.cm3.edit import label_mask, segment_then_edit, vocabulary_with_label
from mmmask.cm3.regions import box_to_mask
from mmmask.data.shapes import render_sample
from mmmask.data.vocab import Vocabulary
from mmmask.predictor import SegmentationPredictor, SegmentationResult

VQ_SIZE = 32
CM3 = ["--config-file", "configs/shapes/cm3.yaml",
       "CM3.N_LAYER", "1", "CM3.N_HEAD", "2", "CM3.N_EMBD", "32",
       "CM3.VQ.IMAGE_SIZE", str(VQ_SIZE), "CM3.VQ.HIDDEN_DIM", "16", "CM3.VQ.CODEBOOK_SIZE", "16",
       "CM3.VQ.CODEBOOK_DIM", "8", "CM3.VQ.KMEANS_INIT", "False", "CM3.VQ.WEIGHTS", "",
       "CM3.GENERATE.MAX_TEXT_TOKENS", "6", "MODEL.DEVICE", "cpu"]
SEG = ["--seg-config-file", "configs/shapes/pmp.yaml", "--seg-opts",
       "MODEL.CLIP.PRETRAINED '' MODEL.PMP.NUM_QUERIES 8 MODEL.PMP.DEC_LAYERS 2 "
       "MODEL.PMP.HIDDEN_DIM 32 MODEL.PMP.MASK_DIM 32 MODEL.PMP.DIM_FEEDFORWARD 64 "
       "MODEL.MASK_ADAPTER.HIDDEN_DIM 32 INPUT.TEST_SIZE 64 MODEL.DEVICE cpu"]
H, W = 40, 48  # not square, not the VQ size: results come back at the input size


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    image = render_sample(0, "test", 3, 64).image[:H, :W].copy()
    Image.fromarray(image).save(folder / "scene.png")
    Image.fromarray(image[..., 0]).save(folder / "gray.png")  # grayscale input works too
    return folder, image


def _one_error_line(capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert needle in err, err
    return err


def test_generate_without_mode_prints_help(capsys):
    assert main(["generate"]) == 2
    out = capsys.readouterr().out
    for mode in ("caption", "image", "infill"):
        assert mode in out


def test_caption_prints_stem_tab_caption(scene, capsys):
    folder, _ = scene
    code = main(["generate", "caption", str(folder / "scene.png"), str(folder / "gray.png"), *CM3])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 2
    assert [line.split("\t", 1)[0] for line in out] == ["scene", "gray"]
    assert all(line.count("\t") == 1 for line in out)


def test_image_writes_rgb_png_seeded(tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        torch.manual_seed(0)  # the same random weights; the sampling seed is --seed
        assert main(["generate", "image", "a red star on grass", "--out", str(out), "--seed", "3",
                     "--cfg-scale", "2", *CM3]) == 0
    im = Image.open(a)
    assert im.mode == "RGB" and im.size == (VQ_SIZE, VQ_SIZE)
    assert np.array_equal(np.asarray(im), np.asarray(Image.open(b)))  # same --seed, same image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp files left


def _check_infill(out, image, region):
    edited = np.asarray(Image.open(out))
    assert edited.shape == image.shape and edited.dtype == np.uint8
    assert np.array_equal(edited[~region], image[~region])  # outside the region: untouched


def test_infill_box_keeps_outside(scene, tmp_path):
    folder, image = scene
    out = tmp_path / "box.png"
    assert main(["generate", "infill", str(folder / "scene.png"), "--box", "8,4,30,20",
                 "--prompt", "a blue ring", "--out", str(out), *CM3]) == 0
    _check_infill(out, image, box_to_mask((8, 4, 30, 20), H, W))


def test_infill_mask_keeps_outside(scene, tmp_path):
    folder, image = scene
    region = np.zeros((H, W), bool)
    region[20:35, 5:17] = True
    region[2:6, 40:46] = True
    Image.fromarray(region.astype(np.uint8) * 255).save(tmp_path / "m.png")
    out = tmp_path / "mask.png"
    assert main(["generate", "infill", str(folder / "scene.png"), "--mask", str(tmp_path / "m.png"),
                 "--prompt", "sky", "--out", str(out), "--seed", "1", *CM3]) == 0
    _check_infill(out, image, region)


@pytest.mark.parametrize("region,needle", [
    (["--box", "1,2,3"], "four numbers"),
    (["--box", "a,b,c,d"], "four numbers"),
    (["--box", "5,5,5,9"], "empty"),
    (["--box", "0,0,100,10"], "outside"),
    (["--mask", "SMALL"], "must match"),
    (["--mask", "EMPTY"], "empty"),
    (["--mask", "MISSING"], "not found"),
])
def test_infill_bad_region(scene, tmp_path, capsys, region, needle):
    folder, _ = scene
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(masks / "SMALL.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "EMPTY.png")
    if region[0] == "--mask":
        region = ["--mask", str(masks / f"{region[1]}.png")]
    out = tmp_path / "out.png"
    code = main(["generate", "infill", str(folder / "scene.png"), *region, "--prompt", "x",
                 "--out", str(out), *CM3])
    _one_error_line(capsys, code, needle)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "not_an_image", "empty"])
def test_unreadable_image(tmp_path, capsys, kind):
    path = tmp_path / "bad.png"
    if kind == "not_an_image":
        path.write_text("hello", encoding="utf-8")
    elif kind == "empty":
        path.write_bytes(b"")
    out = tmp_path / "out.png"
    code = main(["generate", "infill", str(path), "--box", "0,0,4,4", "--prompt", "x", "--out",
                 str(out), *CM3])
    _one_error_line(capsys, code, "bad.png")
    assert not out.exists()
    code = main(["generate", "caption", str(path), *CM3])
    _one_error_line(capsys, code, "bad.png")


def test_no_shipped_cm3_model(tmp_path, capsys, monkeypatch):
    import mmmask.cm3.api as api

    monkeypatch.setattr(api, "default_cm3_config_file", lambda: str(tmp_path / "none.yaml"))
    out = tmp_path / "x.png"
    code = main(["generate", "image", "a red star", "--out", str(out)])
    err = _one_error_line(capsys, code, "No CM3 model is shipped")
    assert "--config-file" in err and not out.exists()


def test_unknown_cm3_key_is_an_error(tmp_path, capsys):
    out = tmp_path / "x.png"
    code = main(["generate", "image", "a", "--out", str(out), *CM3, "CM3.NO_SUCH_KEY", "1"])
    _one_error_line(capsys, code, "NO_SUCH_KEY")
    assert not out.exists()


# ---- segment-then-edit ---------------------------------------------------------------------
class FakeSegmenter:
    """Labels a fixed region as class ``target_index`` of whatever vocabulary it is given."""

    def __init__(self, region, target_index=None):
        self.default_vocabulary = Vocabulary((("red star",), ("grass", "lawn"), ("sky",)))
        self.region, self.target_index, self.calls = region, target_index, []

    def predict(self, image, vocab, task="semantic"):
        self.calls.append((vocab, task))
        semantic = np.full(image.shape[:2], 2)  # everything "sky" ...
        idx = len(vocab) - 1 if self.target_index is None else self.target_index
        semantic[self.region] = idx  # ... except the region
        labels = vocab.labels
        segs = [{"label": labels[c], "mask": semantic == c} for c in np.unique(semantic)]
        return SegmentationResult(height=image.shape[0], width=image.shape[1], labels=labels,
                                  task=task, segments=segs, semantic=semantic)


def test_vocabulary_with_label():
    v = Vocabulary((("red star",), ("grass", "lawn")), seen=(True, False))
    assert vocabulary_with_label(v, "Lawn") == (v, 1)  # a synonym names an existing class
    v2, i = vocabulary_with_label(v, "  blue   ring ")
    assert i == 2 and v2.labels == ["red star", "grass", "blue ring"] and v2.seen == (True, False,
                                                                                        False)
    with pytest.raises(ValueError, match="empty"):
        vocabulary_with_label(v, " ")


def test_segment_then_edit_api(scene):
    from mmmask.cm3.api import CM3Generator

    _, image = scene
    region = np.zeros((H, W), bool)
    region[10:25, 12:30] = True
    seg = FakeSegmenter(region)
    gen = CM3Generator.from_files("configs/shapes/cm3.yaml", opts=CM3[2:])
    edited, mask = segment_then_edit(image, "blue ring", "a yellow star", seg, gen, seed=0)
    assert np.array_equal(mask, region)
    (vocab, task), = seg.calls
    assert task == "semantic" and vocab.labels[-1] == "blue ring" and len(vocab) == 4
    assert edited.shape == image.shape and np.array_equal(edited[~region], image[~region])
    # a label of the default vocabulary is not added twice
    seg = FakeSegmenter(region, target_index=1)
    assert np.array_equal(label_mask(image, "lawn", seg), region)
    assert len(seg.calls[0][0]) == 3
    # absent label: the error names what was found
    with pytest.raises(ValueError, match=r"'red star' not found in the image; found: grass, sky"):
        label_mask(image, "red star", FakeSegmenter(region, target_index=1))
    with pytest.raises(ValueError, match="prompt"):
        segment_then_edit(image, "sky", " ", seg, gen)


def test_infill_vocab_target_cli(scene, tmp_path, capsys, monkeypatch):
    """The real (tiny, random) segmenter runs with the target added to its vocabulary; its
    semantic map is then replaced by a known one, so the edited region is deterministic."""
    folder, image = scene
    region = np.zeros((H, W), bool)
    region[5:20, 20:40] = True
    real_predict = SegmentationPredictor.predict
    seen = []

    def predict(self, img, vocab=None, task="semantic", **kw):
        result = real_predict(self, img, vocab, task=task, **kw)
        assert result.semantic.shape == (H, W)
        seen.append(vocab)
        result.semantic = np.where(region, vocab.labels.index("zebra crossing"), 0)
        result.segments = [{"label": vocab.labels[0], "mask": ~region}]
        return result

    monkeypatch.setattr(SegmentationPredictor, "predict", predict)
    out = tmp_path / "edit.png"
    assert main(["generate", "infill", str(folder / "scene.png"), "--vocab-target",
                 "zebra crossing", "--prompt", "a green hexagon", "--out", str(out), *SEG,
                 *CM3]) == 0
    assert seen and seen[0].labels[-1] == "zebra crossing" and len(seen[0]) > 60
    _check_infill(out, image, region)

    def absent(self, img, vocab=None, task="semantic", **kw):  # label covers no pixel
        result = predict(self, img, vocab, task=task, **kw)
        result.semantic = np.zeros((H, W), int)
        return result

    monkeypatch.setattr(SegmentationPredictor, "predict", absent)
    out2 = tmp_path / "edit2.png"
    code = main(["generate", "infill", str(folder / "scene.png"), "--vocab-target",
                 "zebra crossing", "--prompt", "x", "--out", str(out2), *SEG, *CM3])
    _one_error_line(capsys, code, "not found in the image; found: red circle")
    assert not out2.exists()


def test_vocab_target_without_shipped_segmenter(scene, tmp_path, capsys, monkeypatch):
    import mmmask.predictor as predictor

    folder, _ = scene
    monkeypatch.setattr(predictor, "default_config_file", lambda: str(tmp_path / "none.yaml"))
    out = tmp_path / "x.png"
    code = main(["generate", "infill", str(folder / "scene.png"), "--vocab-target", "sky",
                 "--prompt", "x", "--out", str(out), *CM3])
    _one_error_line(capsys, code, "No segmentation model is shipped")
    assert not out.exists()
