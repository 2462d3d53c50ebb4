"""Bad input across the CLI, the Predictor, tools/eval.py and the dataset readers.

Each kind either fails with one clear message (the CLI: exit status != 0, stderr one line starting
"error:", nothing half-written in --out) or is handled correctly (converted images that segment
fine). docs/bad_inputs.md lists every kind with the test that checks it. NaN losses are covered
by tests/engine/test_engine_trainer.py::test_nan_loss_stops_and_keeps_last_good_checkpoint.
"""

import importlib.util
import io
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFont, ImageOps

from mmmask.cli import main
from mmmask.data.image_io import ImageTooLargeError, as_rgb_array, read_image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["MODEL.CLIP.PRETRAINED", "", "MODEL.PMP.NUM_QUERIES", "8", "MODEL.PMP.DEC_LAYERS", "2",
        "MODEL.PMP.HIDDEN_DIM", "32", "MODEL.PMP.MASK_DIM", "32", "MODEL.PMP.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_ADAPTER.HIDDEN_DIM", "32", "INPUT.TEST_SIZE", "64", "MODEL.DEVICE", "cpu"]
CONFIG = ["--config-file", str(ROOT / "configs/shapes/pmp.yaml")]


# -- helpers ---------------------------------------------------------------------------------
def _png_header(w: int, h: int) -> bytes:
    """A valid PNG signature + IHDR declaring w x h RGB, with a tiny IDAT: a decompression bomb
    by its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _scene(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _segment(capsys, images, out, *args, opts=()):
    """Run ``mmmask segment`` in-process: (exit code, stderr lines, stdout)."""
    argv = ["segment", *images, "--out", out, *CONFIG, *args, *TINY, *opts]
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.err.strip().splitlines(), cap.out


def _assert_one_line_error(code, err, needle, expected_code=2):
    assert code == expected_code, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "Traceback" not in err[0]
    assert needle.lower() in err[0].lower(), err[0]


def _written(out: Path) -> list[str]:
    return sorted(os.listdir(out)) if out.is_dir() else []


def _eval_main():
    spec = importlib.util.spec_from_file_location("eval_tool_bad_inputs",
                                                  ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def predictor():
    from mmmask.predictor import SegmentationPredictor

    return SegmentationPredictor.from_files(str(ROOT / "configs/shapes/pmp.yaml"), None, TINY)


# -- unreadable images (CLI) -----------------------------------------------------------------
BAD_IMAGES = {
    "corrupt": (lambda: b"\x89PNG\r\n\x1a\n garbage after the signature", "corrupt"),
    "truncated": (lambda: _png_bytes(_scene())[:300], "truncated"),
    "zero_byte": (lambda: b"", "empty file"),
    "not_an_image": (lambda: "just some text\n".encode(), "not an image"),
    "huge_header": (lambda: _png_header(30000, 30000), "30000 x 30000"),
}


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_unreadable_image_one_line_error_nothing_written(tmp_path, capsys, kind):
    make, needle = BAD_IMAGES[kind]
    bad = tmp_path / f"{kind}.png"
    bad.write_bytes(make())
    out = tmp_path / "out"
    code, err, _ = _segment(capsys, [bad], out)
    _assert_one_line_error(code, err, needle, expected_code=1)
    assert err[0].count(str(bad)) == 1  # the file is named once
    assert _written(out) == []


def test_huge_image_refused_before_decoding_and_limit_is_configurable(tmp_path, capsys):
    with pytest.raises(ImageTooLargeError, match="INPUT.MAX_PIXELS"):
        read_image(_png_header(30000, 30000))  # the header alone: nothing is decoded
    small = tmp_path / "small.png"
    Image.fromarray(_scene(40, 48)).save(small)
    code, err, _ = _segment(capsys, [small], tmp_path / "out", opts=["INPUT.MAX_PIXELS", "1000"])
    _assert_one_line_error(code, err, "more than the limit of 1000", expected_code=1)


def test_good_and_bad_images_mixed(tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(_scene()).save(good)
    bad.write_bytes(b"")
    out = tmp_path / "out"
    code, err, stdout = _segment(capsys, [bad, good], out)
    assert code == 1 and len(err) == 1 and err[0].startswith("error:") and "bad.png" in err[0]
    assert _written(out) == ["good.json", "good.png"]  # the bad one leaves no STEM.json/png
    assert "good.png" in stdout


def test_missing_image_and_directory(tmp_path, capsys):
    code, err, _ = _segment(capsys, [tmp_path / "nope.png"], tmp_path / "out")
    _assert_one_line_error(code, err, "image not found")
    folder = tmp_path / "photos"
    folder.mkdir()
    code, err, _ = _segment(capsys, [folder], tmp_path / "out")
    _assert_one_line_error(code, err, "is a directory, not an image")
    assert _written(tmp_path / "out") == []


def test_out_is_a_file(tmp_path, capsys):
    img, out = tmp_path / "a.png", tmp_path / "results"
    Image.fromarray(_scene()).save(img)
    out.write_text("not a folder")
    code, err, _ = _segment(capsys, [img], out)
    _assert_one_line_error(code, err, "is a file; give a folder")


def test_image_smaller_than_8px(tmp_path, capsys):
    img = tmp_path / "tiny.png"
    Image.new("RGB", (5, 5)).save(img)
    code, err, _ = _segment(capsys, [img], tmp_path / "out")
    _assert_one_line_error(code, err, "at least 8x8", expected_code=1)
    assert _written(tmp_path / "out") == []


def test_cli_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "zero.png"
    bad.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "mmmask.cli", "segment", str(bad), "--out",
                           str(tmp_path / "out"), *CONFIG, *TINY], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "MMMASK_DEBUG": ""}, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1
    assert lines == [f"error: {bad}: empty file (0 bytes), not an image"], proc.stderr
    assert not (tmp_path / "out").exists()


# -- unusual but valid images: converted, then segmented -------------------------------------
def _exif_rotated(path: Path) -> np.ndarray:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:5, :5] = (255, 0, 0)  # a red corner at the stored top-left
    ex = Image.Exif()
    ex[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(path, exif=ex.tobytes(), quality=95)
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _write_kind(kind: str, path: Path) -> np.ndarray:
    """Write an image of ``kind``; returns the HxWx3 uint8 RGB it must read as."""
    if kind == "gray16":
        ramp = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)
        Image.fromarray(ramp).save(path)
        g = (ramp.astype(np.uint32) * 255 // 65535).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if kind == "rgba":
        rgba = np.zeros((24, 32, 4), np.uint8)
        rgba[..., 0] = 200
        rgba[:, 16:, 3] = 255  # left half transparent -> white background
        Image.fromarray(rgba, "RGBA").save(path)
        want = np.full((24, 32, 3), 255, np.uint8)
        want[:, 16:] = (200, 0, 0)
        return want
    if kind == "grayscale":
        Image.new("L", (32, 24), 90).save(path)
        return np.full((24, 32, 3), 90, np.uint8)
    if kind == "exif_rotated":
        return _exif_rotated(path)
    if kind == "animated":
        frames = [Image.new("RGB", (32, 24), c) for c in ((0, 200, 0), (0, 0, 200), (9, 9, 9))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
        return np.asarray(Image.new("RGB", (32, 24), (0, 200, 0)))
    raise KeyError(kind)


KINDS = {"gray16": "png", "rgba": "png", "grayscale": "png", "exif_rotated": "jpg",
         "animated": "gif"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_converted_images_read_and_segment(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.{KINDS[kind]}"
    want = _write_kind(kind, path)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= (12 if kind == "exif_rotated" else 1)
    if kind == "exif_rotated":  # displayed upright: 40 tall, the red corner now top-right
        assert got.shape[:2] == (40, 20) and got[1, -2, 0] > 200 and got[1, 1, 0] < 60
    out = tmp_path / "out"
    code, err, _ = _segment(capsys, [path], out, "--vocab", "sky,grass")
    assert code == 0 and err == []
    data = json.loads((out / f"{kind}.json").read_text())
    assert (data["height"], data["width"]) == want.shape[:2]


def test_predictor_takes_gray_rgba_float_arrays(predictor):
    rgb = _scene(24, 32)
    gray = rgb[..., 0]
    r = predictor.predict(gray, "sky,grass")
    assert (r.height, r.width) == (24, 32) and r.segments
    rgba = np.concatenate([rgb, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(as_rgb_array(rgba), rgb)
    assert np.array_equal(as_rgb_array(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(as_rgb_array(Image.fromarray(rgb)), rgb)
    assert predictor.predict(rgba, "sky").height == 24
    for bad, needle in [(np.zeros((4, 24, 32)), "shape"), (np.full((24, 32, 3), 300.0), "0..255"),
                        (np.full((24, 32, 3), np.nan), "NaN"), ("image.png", "str")]:
        with pytest.raises(ValueError, match=needle):
            predictor.predict(bad, "sky")


def test_extremely_wide_and_tall_images(predictor):
    for h, w in [(20, 4000), (4000, 20)]:
        r = predictor.predict(_scene(h, w), "sky,grass")
        assert (r.height, r.width) == (h, w)
        assert sum(int(s["mask"].sum()) for s in r.segments) == h * w  # every pixel labelled


# -- vocabularies ----------------------------------------------------------------------------
@pytest.mark.parametrize("vocab,needle", [
    ("", "vocabulary is empty"),
    ("   ", "vocabulary is empty"),
    (" , | ,", "vocabulary is empty"),
    ("sky,Sky", "Duplicate class"),
    ("sky,  sky ", "Duplicate class"),
    ("e\u0301toile,\u00e9toile", "Duplicate class"),  # NFD and NFC spellings of one word
    ("sky," + "a" * 201, "at most 200"),
])
def test_bad_vocabulary_one_line_error(tmp_path, capsys, vocab, needle):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    code, err, _ = _segment(capsys, [img], tmp_path / "out", "--vocab", vocab)
    _assert_one_line_error(code, err, needle)
    assert _written(tmp_path / "out") == []


@pytest.mark.parametrize("content,needle", [(b"", "lists no classes"),
                                            (b"# only a comment\n\n", "lists no classes"),
                                            (b"\xff\xfe\x00sky", "not UTF-8")])
def test_bad_vocabulary_file(tmp_path, capsys, content, needle):
    img, vf = tmp_path / "a.png", tmp_path / "classes.txt"
    Image.fromarray(_scene()).save(img)
    vf.write_bytes(content)
    code, err, _ = _segment(capsys, [img], tmp_path / "out", "--vocab-file", vf)
    _assert_one_line_error(code, err, needle)


def test_non_ascii_vocabulary_and_file_name_work(tmp_path, capsys):
    img = tmp_path / "étoile.png"
    Image.fromarray(_scene()).save(img)
    out = tmp_path / "out"
    code, err, _ = _segment(capsys, [img], out, "--vocab", "étoile rouge,天空")
    assert code == 0 and err == []
    data = json.loads((out / "étoile.json").read_text(encoding="utf-8"))
    assert data["vocabulary"] == ["étoile rouge", "天空"] and data["image"] == "étoile.png"
    assert {s["label"] for s in data["segments"]} <= {"étoile rouge", "天空"}
    assert Image.open(out / "étoile.png").width > 48  # overlay + legend


def test_legend_with_non_latin_labels_and_bitmap_font(monkeypatch):
    """PIL without FreeType falls back to a Latin-1 bitmap font: the legend still draws."""
    from mmmask.utils.visualize import overlay_segments

    bitmap = ImageFont.load_default_imagefont()
    monkeypatch.setattr(ImageFont, "load_default", lambda *a, **k: bitmap)
    m = np.zeros((16, 16), bool)
    m[:8] = True
    out = overlay_segments(np.zeros((16, 16, 3), np.uint8), [m, ~m], ["étoile rouge", "天空"])
    assert out.shape[0] >= 16 and out.shape[1] > 16 and out.dtype == np.uint8  # legend added


def test_thousand_class_vocabulary_is_batched(predictor, monkeypatch):
    text = predictor.model.backbone.text
    calls = []
    encode = text.encode_tokens

    def spy(tokens, truncate=True):
        calls.append(tuple(tokens.shape))
        return encode(tokens, truncate)

    monkeypatch.setattr(text, "encode_tokens", spy)
    names = [f"kind {i} of thing" for i in range(1000)]
    r = predictor.predict(_scene(32, 32), ",".join(names))
    assert r.labels == names and r.segments
    n_prompts = 1000 * len(text.templates)
    assert len(calls) == math.ceil(n_prompts / text.batch_size)
    assert all(n <= text.batch_size for n, _ in calls)
    calls.clear()
    predictor.predict(_scene(32, 32), ",".join(names))
    assert calls == []  # the second time comes from the cache


# -- checkpoints -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, predictor):
    from mmmask.modeling.clip.models import create_clip
    from mmmask.utils.weights import save_safetensors

    d = tmp_path_factory.mktemp("ckpt")
    vit, _, _ = create_clip("mmmask-shapes-vit", "")
    save_safetensors(vit.state_dict(), str(d / "vit_clip.safetensors"))
    save_safetensors(predictor.model.state_dict(), str(d / "pmp_q8.safetensors"))
    (d / "empty.pth").write_bytes(b"")
    (d / "broken.safetensors").write_bytes(b"\x00" * 10)
    torch.save({"not": "tensors"}, d / "dict.pth")
    return d


@pytest.mark.parametrize("weights,opts,needle", [
    ("missing.safetensors", [], "Weight file not found"),
    ("empty.pth", [], "Cannot read weight file"),
    ("broken.safetensors", [], "Cannot read safetensors file"),
    ("dict.pth", [], "does not hold a state dict"),
    ("vit_clip.safetensors", [], "does not fit the model"),  # a CLIP file as model weights
    ("pmp_q8.safetensors", ["MODEL.PMP.NUM_QUERIES", "6"], "query_feat.weight: (8, 32)"),
])
def test_bad_checkpoint_one_line_error(tmp_path, capsys, checkpoints, weights, opts, needle):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    code, err, _ = _segment(capsys, [img], tmp_path / "out", "--weights",
                            checkpoints / weights, opts=opts)
    _assert_one_line_error(code, err, needle)
    assert _written(tmp_path / "out") == []


def test_vit_clip_state_dict_into_convnext_config(tmp_path, capsys, checkpoints):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    code, err, _ = _segment(capsys, [img], tmp_path / "out",
                            opts=["MODEL.CLIP.PRETRAINED",
                                  str(checkpoints / "vit_clip.safetensors")])
    _assert_one_line_error(code, err, "does not fit the model")
    assert "unexpected keys ['visual.class_embedding'" in err[0]


def test_matching_checkpoint_still_loads(tmp_path, capsys, checkpoints):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    code, err, _ = _segment(capsys, [img], tmp_path / "out", "--weights",
                            checkpoints / "pmp_q8.safetensors")
    assert code == 0 and err == []


# -- configs ---------------------------------------------------------------------------------
def test_unknown_config_keys(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(f"_BASE_: '{ROOT / 'configs/shapes/pmp.yaml'}'\nMODEL:\n  PMP:\n"
                    "    NUM_QUERIESS: 3\n")
    code = main(["segment", str(img), "--out", str(tmp_path / "o"), "--config-file", str(yaml),
                 *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    _assert_one_line_error(code, err, "Unknown config key 'MODEL.PMP.NUM_QUERIESS'")
    assert "MODEL.PMP.NUM_QUERIES." in err[0]  # the closest valid key is suggested
    code, err, _ = _segment(capsys, [img], tmp_path / "o", opts=["MODEL.PMP.NUM_QUERY", "3"])
    _assert_one_line_error(code, err, "Unknown config key 'MODEL.PMP.NUM_QUERY'")


@pytest.mark.parametrize("yaml_text,opts,needle", [
    (None, ["MODEL.DEVICE"], "KEY VALUE pairs"),
    (None, ["MODEL.PMP.NUM_QUERIES", "many"], "Type mismatch"),
    ("MODEL: [unclosed\n", [], "c.yaml, line 2: not valid YAML (while parsing a flow"),
    ("missing", [], "Config file not found"),
])
def test_bad_config_file_or_override(tmp_path, capsys, yaml_text, opts, needle):
    img = tmp_path / "a.png"
    Image.fromarray(_scene()).save(img)
    config = CONFIG
    if yaml_text == "missing":
        config = ["--config-file", str(tmp_path / "nope.yaml")]
    elif yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        config = ["--config-file", str(tmp_path / "c.yaml")]
    code = main(["segment", str(img), "--out", str(tmp_path / "o"), *config, *TINY, *opts])
    err = capsys.readouterr().err.strip().splitlines()
    _assert_one_line_error(code, err, needle)
    assert _written(tmp_path / "o") == []


# -- datasets and evaluation -----------------------------------------------------------------
def _user_root(tmp_path: Path, label: int = 1, ann_size=(32, 32)) -> Path:
    root = tmp_path / "ds"
    (root / "images" / "test").mkdir(parents=True)
    (root / "annotations" / "test").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(["sky", "grass"]))
    Image.fromarray(_scene(32, 32)).save(root / "images" / "test" / "a.png")
    ann = np.zeros(ann_size[::-1], np.uint8)
    ann[:4] = label
    Image.fromarray(ann).save(root / "annotations" / "test" / "a.png")
    return root


@pytest.mark.parametrize("kwargs,needle", [
    ({"ann_size": (30, 32)}, "is 30 x 32 but its image"),
    ({"label": 7}, "label id 7 is not a class id (0..1)"),
])
def test_eval_bad_annotations(tmp_path, capsys, kwargs, needle):
    root = _user_root(tmp_path, **kwargs)
    out = tmp_path / "metrics.json"
    code = _eval_main()([*CONFIG, "--dataset-root", str(root), "--task", "semantic", "--output",
                         str(out), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and needle in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not out.exists() and not (tmp_path / "metrics.json.tmp").exists()


def test_eval_ignore_label_is_fine(tmp_path, capsys):
    root = _user_root(tmp_path, label=255)
    out = tmp_path / "metrics.json"
    assert _eval_main()([*CONFIG, "--dataset-root", str(root), "--task", "semantic", "--output",
                         str(out), *TINY]) == 0
    assert "mIoU" in json.loads(out.read_text())


def test_eval_coco_file_name_escaping_root(tmp_path, capsys):
    root = tmp_path / "coco"
    (root / "images" / "test").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_test.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "../../../etc/passwd", "height": 32, "width": 32}],
        "categories": [{"id": 1, "name": "x"}], "annotations": []}))
    out = tmp_path / "m.json"
    code = _eval_main()([*CONFIG, "--dataset-root", str(root), "--task", "instance", "--output",
                         str(out), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and "escapes the dataset root" in err[-1]
    assert not out.exists()


@pytest.mark.parametrize("image_name,png_name,needle", [
    ("/etc/hostname", "a.png", "must be relative"),
    ("a.png", "../../outside.png", "escapes"),
])
def test_coco_panoptic_paths_escaping_root(tmp_path, image_name, png_name, needle):
    from mmmask.data.coco import load_coco_panoptic

    js = tmp_path / "panoptic.json"
    js.write_text(json.dumps({
        "images": [{"id": 1, "file_name": image_name, "height": 4, "width": 4}],
        "annotations": [{"image_id": 1, "file_name": png_name, "segments_info": []}],
        "categories": [{"id": 1, "name": "x", "isthing": 1}]}))
    (tmp_path / "img").mkdir()
    (tmp_path / "png").mkdir()
    with pytest.raises(ValueError, match=needle):
        load_coco_panoptic(str(js), str(tmp_path / "png"), str(tmp_path / "img"))


def test_bad_classes_json(tmp_path, capsys):
    root = _user_root(tmp_path)
    (root / "classes.json").write_text("[\"sky\", ")
    code = _eval_main()([*CONFIG, "--dataset-root", str(root), "--task", "semantic", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {root / 'classes.json'}: not valid JSON "
                                 f"({err[0].split('(', 1)[1]}"]


def test_nan_loss_is_covered_in_engine_tests():
    """NaN losses stop training with FloatingPointError and keep the last good checkpoint."""
    text = (ROOT / "tests" / "engine" / "test_engine_trainer.py").read_text()
    assert "def test_nan_loss_stops_and_keeps_last_good_checkpoint" in text


# -- another run's mask generator under a model's classifiers (MODEL.GENERATOR_WEIGHTS) ------
def test_generator_weights_swap_only_the_generator_and_wrong_files_are_named(tmp_path):
    from mmmask.predictor import SegmentationPredictor
    from mmmask.utils.weights import save_safetensors

    config = str(ROOT / "configs/shapes/pmp.yaml")
    torch.manual_seed(0)
    base = SegmentationPredictor.from_files(config, None, TINY)
    torch.manual_seed(1)
    other = SegmentationPredictor.from_files(config, None, TINY)
    base_file, other_file = tmp_path / "base.safetensors", tmp_path / "other.safetensors"
    save_safetensors(base.model.state_dict(), str(base_file))
    save_safetensors(other.model.state_dict(), str(other_file))

    swapped = SegmentationPredictor.from_files(
        config, str(base_file), TINY + ["MODEL.GENERATOR_WEIGHTS", str(other_file)])
    state = swapped.model.state_dict()
    gen = [k for k in state if k.startswith("mask_generator.")]
    rest = [k for k in state
            if not k.startswith("mask_generator.") and state[k].is_floating_point()]
    assert gen and rest
    assert all(torch.equal(state[k], other.model.state_dict()[k]) for k in gen)
    assert all(torch.equal(state[k], base.model.state_dict()[k]) for k in rest)
    before, donor = base.model.state_dict(), other.model.state_dict()
    assert any(not torch.equal(before[k], donor[k]) for k in gen)

    # a file without a generator, and a generator of another architecture, fail by name
    clip_only = tmp_path / "clip_only.safetensors"
    save_safetensors({k: v for k, v in base.model.state_dict().items()
                      if k.startswith("backbone.")}, str(clip_only))
    with pytest.raises(ValueError, match=r"no mask_generator\.\* tensors.*GENERATOR_WEIGHTS"):
        SegmentationPredictor.from_files(config, str(base_file),
                                         TINY + ["MODEL.GENERATOR_WEIGHTS", str(clip_only)])
    plain = TINY + ["MODEL.PMP.TEXT_CROSS_ATTN", "False"]
    missing_key = r"do not fit.*: [1-9]\d* missing key.*\(MODEL\.GENERATOR_WEIGHTS\)"
    unknown_key = r"do not fit.*, [1-9]\d* unexpected key.*\(MODEL\.GENERATOR_WEIGHTS\)"
    with pytest.raises(ValueError, match=missing_key):
        SegmentationPredictor.from_files(config, str(base_file), TINY + [
            "MODEL.GENERATOR_WEIGHTS", str(_plain_generator_file(tmp_path, config, plain))])
    with pytest.raises(ValueError, match=unknown_key):
        SegmentationPredictor.from_files(config, None, plain + [
            "MODEL.GENERATOR_WEIGHTS", str(other_file)])
    with pytest.raises(FileNotFoundError, match="GENERATOR_WEIGHTS"):
        SegmentationPredictor.from_files(config, str(base_file), TINY + [
            "MODEL.GENERATOR_WEIGHTS", str(tmp_path / "missing.safetensors")])


def _plain_generator_file(tmp_path, config, opts):
    from mmmask.predictor import SegmentationPredictor
    from mmmask.utils.weights import save_safetensors

    plain = SegmentationPredictor.from_files(config, None, opts)
    path = tmp_path / "plain.safetensors"
    save_safetensors(plain.model.state_dict(), str(path))
    return path
