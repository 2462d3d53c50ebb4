"""Shapes-OV properties the data pipeline relies on."""

import re

import numpy as np
import pytest

from mmmask.config import get_cfg
from mmmask.data import CaptionMapper, DatasetCatalog, shapes


def test_deterministic_per_seed():
    a = shapes.render_sample(5, "train", 3, 48)
    b = shapes.render_sample(5, "train", 3, 48)
    c = shapes.render_sample(6, "train", 3, 48)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.sem_seg, b.sem_seg)
    assert a.caption == b.caption
    assert not np.array_equal(a.image, c.image)
    img1, cap1, cls1 = shapes.render_object_crop(0, 9, 32)
    img2, cap2, cls2 = shapes.render_object_crop(0, 9, 32)
    np.testing.assert_array_equal(img1, img2)
    assert (cap1, cls1) == (cap2, cls2)


def test_unseen_classes_never_labelled_in_train():
    seen = np.asarray(shapes.IS_SEEN)
    unseen_in_val = set()
    for i in range(300):
        s = shapes.render_sample(0, "train", i, 32)
        labels = np.unique(s.sem_seg)
        labels = labels[labels != 255]
        assert seen[labels].all(), f"train sample {i} labels an unseen class"
        assert all(seen[d["category_id"]] for d in s.instances)
    for i in range(100):
        labels = np.unique(shapes.render_sample(0, "val", i, 32).sem_seg)
        unseen_in_val |= {int(c) for c in labels if c != 255 and not seen[c]}
    assert unseen_in_val  # evaluation splits do contain unseen classes


def _words(text):
    return set(re.findall(r"[a-z]+", text.lower()))


def test_every_class_appears_in_captions():
    cfg = get_cfg()
    cfg.MODEL.CLIP.IMAGE_SIZE = 16
    mapper = CaptionMapper(cfg, False)
    recs = DatasetCatalog.get("shapes_ov_captions")
    assert len(recs) >= 100_000
    colour_words = {c: {c, *syn} for c, (_, syn) in shapes.COLOURS.items()}
    shape_words = {s: {s, *syn} for s, syn in shapes.SHAPES.items()}
    found = set()
    for i in range(1200):
        caption = mapper(recs[i])["caption"].lower()
        words = _words(caption)
        for cid, name in enumerate(shapes.CLASS_NAMES):
            if shapes.IS_THING[cid]:
                colour, shape = name.split(" ", 1)
                if colour_words[colour] & words and any(
                        all(w in words for w in s.split()) for s in shape_words[shape]):
                    found.add(cid)
            elif any(syn in caption for syn in shapes.CLASS_SYNONYMS[cid]):
                found.add(cid)
    missing = [shapes.CLASS_NAMES[c] for c in range(len(shapes.CLASS_NAMES)) if c not in found]
    assert not missing, f"classes never captioned: {missing}"


def test_crop_records_cover_every_thing_class():
    ids = {shapes.render_object_crop(0, i, 16)[2] for i in range(0, 1600, 2)}
    assert ids == set(range(shapes.NUM_THINGS))


def test_builtin_records():
    recs = DatasetCatalog.get("shapes_ov_test")
    r = recs[4]
    assert r["shapes"]["split"] == "test" and r["shapes"]["index"] == 4 and r["image_id"] == 4
    assert recs[-1]["image_id"] == len(recs) - 1
    assert [x["image_id"] for x in recs[2:5]] == [2, 3, 4]


def test_region_records_show_one_object_in_context():
    from mmmask.data.builtin import ShapesRecords
    from mmmask.evaluation.generation import caption_mentions

    for i in range(12):
        img, caption, cid = shapes.render_object_region(0, i, 32)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.flags.writeable
        colour, shape = shapes.CLASS_NAMES[cid].split(" ", 1)
        assert caption_mentions(caption, colour, shape), caption
        assert " and " not in caption  # that object alone
        again = shapes.render_object_region(0, i, 32)
        np.testing.assert_array_equal(img, again[0])
    recs = ShapesRecords("captions", 9, 32, 0, captions=True, kinds=("crop", "scene", "region"))
    assert [r["shapes"]["kind"] for r in recs[:4]] == ["crop", "scene", "region", "crop"]
    mapper = CaptionMapper(get_cfg(), False)
    item = mapper(recs[2])
    assert item["image"].shape[-2:] == (64, 64) and item["caption"]
    with pytest.raises(ValueError, match="crops") as e:
        ShapesRecords("captions", 9, 32, 0, captions=True, kinds=("crop", "crops"))
    assert "crops" in str(e.value) and "region" in str(e.value)
