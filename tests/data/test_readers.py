import json
import os

import numpy as np
import pytest
from PIL import Image

from mmmask.data import (
    DatasetCatalog,
    MetadataCatalog,
    load_classes_json,
    load_coco_instances,
    load_coco_panoptic,
    load_user_split,
    register_dataset_root,
    segmentation_to_mask,
)
from mmmask.data import shapes
from mmmask.data.readers import resolve_dataset_root


def _write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_user_layout_round_trip(shapes_root):
    names = register_dataset_root(shapes_root, "rt")
    assert {"rt_train", "rt_val", "rt_train_panoptic", "rt_val_panoptic", "rt_train_instances",
            "rt_val_instances"} == set(names)
    recs = DatasetCatalog.get("rt_val")
    assert len(recs) == 4  # conftest SPLITS
    meta = MetadataCatalog.get("rt_val")
    assert meta.classes == [list(s) for s in shapes.CLASS_SYNONYMS]
    assert meta.is_thing == shapes.IS_THING and meta.is_seen == shapes.IS_SEEN
    assert meta.evaluator_type == "sem_seg"
    for i, r in enumerate(recs):
        s = shapes.render_sample(3, "val", i, 64)
        assert (r["height"], r["width"]) == (64, 64)
        np.testing.assert_array_equal(np.asarray(Image.open(r["file_name"])), s.image)
        np.testing.assert_array_equal(np.asarray(Image.open(r["sem_seg_file_name"])), s.sem_seg)


def test_coco_panoptic_round_trip(shapes_root):
    root = str(shapes_root)
    recs, meta = load_coco_panoptic(
        os.path.join(root, "annotations", "panoptic_train.json"),
        os.path.join(root, "annotations", "panoptic_train"),
        os.path.join(root, "images", "train"))
    assert meta["evaluator_type"] == "panoptic"
    assert [c[0] for c in meta["classes"]] == shapes.CLASS_NAMES
    assert meta["is_thing"] == shapes.IS_THING and meta["is_seen"] == shapes.IS_SEEN
    assert meta["thing_dataset_id_to_contiguous_id"][1] == 0
    from mmmask.data.image_io import read_panoptic_png

    for i, r in enumerate(recs):
        s = shapes.render_sample(3, "train", i, 64)
        ids = read_panoptic_png(r["pan_seg_file_name"])
        sem = np.full((64, 64), 255)
        for seg in r["segments_info"]:
            sem[ids == seg["id"]] = seg["category_id"]
            assert seg["isthing"] == shapes.IS_THING[seg["category_id"]]
        np.testing.assert_array_equal(sem, s.sem_seg)
        things = [seg["category_id"] for seg in r["segments_info"] if seg["isthing"]]
        assert sorted(things) == sorted(d["category_id"] for d in s.instances if d["mask"].any())


def test_coco_instances_round_trip(shapes_root):
    root = str(shapes_root)
    recs, meta = load_coco_instances(os.path.join(root, "annotations", "instances_val.json"),
                                     os.path.join(root, "images", "val"))
    assert meta["evaluator_type"] == "instance" and all(meta["is_thing"])
    assert len(meta["classes"]) == shapes.NUM_THINGS
    for i, r in enumerate(recs):
        s = shapes.render_sample(3, "val", i, 64)
        got = [(a["category_id"], segmentation_to_mask(a["segmentation"], 64, 64))
               for a in r["annotations"]]
        want = [(d["category_id"], d["mask"]) for d in s.instances if d["mask"].any()]
        assert [c for c, _ in got] == [c for c, _ in want]
        for (_, m1), (_, m2) in zip(got, want):
            np.testing.assert_array_equal(m1, m2)


def test_coco_instances_polygons_and_uncompressed_rle(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 8)).save(tmp_path / "img" / "a.png")
    rle_counts = [8 * 2, 8 * 3, 8 * 5]  # column-major: 2 empty columns, 3 full, 5 empty
    js = _write_json(tmp_path / "inst.json", {
        "images": [{"id": 7, "file_name": "a.png", "height": 8, "width": 10}],
        "categories": [{"id": 5, "name": "box"}, {"id": 9, "name": "bar"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 9, "iscrowd": 0, "area": 9,
             "bbox": [1, 1, 3, 3], "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]},
            {"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 1, "area": 24,
             "bbox": [2, 0, 3, 8], "segmentation": {"size": [8, 10], "counts": rle_counts}},
        ],
    })
    recs, meta = load_coco_instances(js, str(tmp_path / "img"))
    assert meta["thing_dataset_id_to_contiguous_id"] == {5: 0, 9: 1}
    (a_poly, a_rle), = [sorted(recs[0]["annotations"], key=lambda a: a["id"])]
    assert a_poly["category_id"] == 1 and a_rle["category_id"] == 0
    poly = segmentation_to_mask(a_poly["segmentation"], 8, 10)
    assert poly[2, 2] and not poly[6, 6] and 6 <= poly.sum() <= 16
    rle = segmentation_to_mask(a_rle["segmentation"], 8, 10)
    assert rle[:, 2:5].all() and rle.sum() == 24


def test_coco_file_names_cannot_escape(tmp_path):
    (tmp_path / "img").mkdir()
    js = _write_json(tmp_path / "inst.json", {
        "images": [{"id": 1, "file_name": "../../etc/passwd", "height": 1, "width": 1}],
        "categories": [{"id": 1, "name": "x"}], "annotations": []})
    with pytest.raises(ValueError, match="escapes"):
        load_coco_instances(js, str(tmp_path / "img"))


def _user_root(tmp_path, classes, stems=("a", "b"), ann_stems=None):
    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations" / "train").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(classes))
    for s in stems:
        Image.new("RGB", (6, 4), (10, 20, 30)).save(root / "images" / "train" / f"{s}.jpg")
    for s in (stems if ann_stems is None else ann_stems):
        ann = root / "annotations" / "train" / f"{s}.png"
        Image.fromarray(np.zeros((4, 6), np.uint8)).save(ann)
    return root


def test_missing_annotation_is_listed(tmp_path):
    root = _user_root(tmp_path, ["cat", "dog"], stems=("a", "b", "c"), ann_stems=("a",))
    with pytest.raises(ValueError) as e:
        load_user_split(str(root), "train")
    assert "2 image(s)" in str(e.value) and "b.jpg" in str(e.value) and "c.jpg" in str(e.value)
    recs = load_user_split(str(root), "train", allow_unlabeled=True)
    assert [("sem_seg_file_name" in r) for r in recs] == [True, False, False]


def test_orphan_annotation_is_listed(tmp_path):
    root = _user_root(tmp_path, ["cat"], stems=("a",), ann_stems=("a", "zz"))
    with pytest.raises(ValueError, match="zz.png"):
        load_user_split(str(root), "train")


def test_classes_json_forms(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(["sky", ["person", "people"], "car"]))
    meta = load_classes_json(str(p))
    assert meta["classes"] == [["sky"], ["person", "people"], ["car"]]
    assert meta["is_thing"] == [False] * 3 and meta["is_seen"] is None
    p.write_text(json.dumps({"classes": ["sky", ["person", "people"], "car"],
                             "stuff": ["sky"], "unseen": ["people"]}))
    meta = load_classes_json(str(p))
    assert meta["is_thing"] == [False, True, True] and meta["is_seen"] == [True, False, True]
    p.write_text(json.dumps({"classes": ["sky", "car"], "thing": ["car"], "stuff": [0]}))
    assert load_classes_json(str(p))["is_thing"] == [False, True]
    p.write_text(json.dumps({"classes": ["sky", "car"], "thing": ["cars"]}))
    with pytest.raises(KeyError, match="car"):
        load_classes_json(str(p))
    p.write_text(json.dumps({"classes": ["sky", "car", "tree"], "thing": ["car"],
                             "stuff": ["sky"]}))
    with pytest.raises(ValueError, match="tree"):
        load_classes_json(str(p))
    p.write_text(json.dumps(["sky", "Sky"]))
    with pytest.raises(ValueError, match="Duplicate"):
        load_classes_json(str(p))
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_classes_json(str(p))


def test_register_root_errors_and_env(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MMMASK_DATASETS"):
        register_dataset_root(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="classes.json"):
        register_dataset_root(tmp_path / "empty")
    root = _user_root(tmp_path, ["cat"], stems=("a",))
    monkeypatch.setenv("MMMASK_DATASETS", str(tmp_path))
    assert resolve_dataset_root("ds") == os.path.join(str(tmp_path), "ds")
    assert register_dataset_root("ds") == ["ds_train"]
    rec, = DatasetCatalog.get("ds_train")
    assert (rec["height"], rec["width"], rec["image_id"]) == (4, 6, "a")


def test_coco_categories_are_read_without_parsing_the_records(tmp_path):
    from mmmask.data.coco import read_coco_categories

    cats = [{"id": 3, "name": "cat", "supercategory": "animal", "color": [1, 2, 3]},
            {"id": 7, "name": "dog, \"big\" ]", "isthing": 1}]
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 4, "width": 4} for i in range(5000)]
    decoy = {"id": 0, "file_name": 'a "categories": [1] b.jpg', "height": 4, "width": 4}
    layouts = {
        "last.json": {"images": images, "annotations": [], "categories": cats},
        "first.json": {"categories": cats, "images": [decoy] + images, "annotations": []},
        "nested_decoy.json": {"categories": cats, "info": {"categories": "none"}},
        "spaced.json": None,
    }
    for name, data in layouts.items():
        path = tmp_path / name
        if data is None:
            path.write_text('{\n  "categories" :\n  ' + json.dumps(cats, indent=2) + "\n}")
        else:
            path.write_text(json.dumps(data))
        assert read_coco_categories(str(path)) == cats, name
    (tmp_path / "none.json").write_text(json.dumps({"images": images}))
    assert read_coco_categories(str(tmp_path / "none.json")) == []
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco_categories(str(tmp_path / "broken.json"))
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco_categories(str(tmp_path / "empty.json"))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_coco_categories(str(tmp_path / "missing.json"))
