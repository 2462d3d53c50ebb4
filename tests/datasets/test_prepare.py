"""The dataset preparation scripts on tiny fake downloads in the original formats."""

import importlib
import io
import json
import os
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

DATASETS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "datasets")
sys.path.insert(0, os.path.abspath(DATASETS_DIR))


def script(name):
    return importlib.import_module(name)


def _jpg(path, h=8, w=10):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _zip_dir(folder, zip_path):
    with zipfile.ZipFile(zip_path, "w") as z:
        for root, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, os.path.dirname(folder)))


def _labels(root, split, stem):
    with Image.open(os.path.join(root, "annotations", split, stem + ".png")) as im:
        return np.asarray(im).astype(np.int64)


def _register(root):
    from mmmask.data.catalog import DatasetCatalog, MetadataCatalog
    from mmmask.data.readers import register_dataset_root

    names = register_dataset_root(root, name_prefix=f"t_{os.path.basename(root)}")
    return names, DatasetCatalog, MetadataCatalog


def test_ade20k_150_from_zip(tmp_path):
    src = tmp_path / "ADEChallengeData2016"
    ann = np.array([[0, 1, 150], [2, 0, 149]], np.uint8).repeat(4, 0).repeat(3, 1)
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        _jpg(str(src / "images" / split / f"{stem}.jpg"), *ann.shape)
        _png(str(src / "annotations" / split / f"{stem}.png"), ann)
    _zip_dir(str(src), str(tmp_path / "ade.zip"))
    out = tmp_path / "ade20k_150"
    assert script("prepare_ade20k_150").main(["--src", str(tmp_path / "ade.zip"),
                                              "--out", str(out)]) == 0
    names, catalog, meta = _register(str(out))
    assert sorted(names) == ["t_ade20k_150_train", "t_ade20k_150_val"]
    m = meta.get("t_ade20k_150_val")
    assert len(m.classes) == 150 and m.classes[1] == ["building", "edifice"]
    rec = catalog.get("t_ade20k_150_val")[0]
    got = _labels(str(out), "val", "ADE_val_00000001")
    assert got[0, 0] == 255 and got[0, 3] == 0 and got[0, 6] == 149 and got[4, 0] == 1
    assert rec["sem_seg_file_name"].endswith("ADE_val_00000001.png")


def test_pascal_voc20_from_tar(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    ann = np.array([[0, 1, 20, 255]], np.uint8).repeat(4, 0)
    for split, stem in (("train", "2007_000032"), ("val", "2007_000033")):
        _jpg(str(root / "JPEGImages" / f"{stem}.jpg"), *ann.shape)
        _png(str(root / "SegmentationClass" / f"{stem}.png"), ann)
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(stem + "\n")
    with tarfile.open(tmp_path / "voc.tar", "w") as t:
        t.add(str(tmp_path / "VOCdevkit"), arcname="VOCdevkit")
    out = tmp_path / "voc20"
    script("prepare_pascal_voc20").main(["--src", str(tmp_path / "voc.tar"), "--out", str(out)])
    names, catalog, meta = _register(str(out))
    assert "t_voc20_val" in names and len(meta.get("t_voc20_val").classes) == 20
    assert _labels(str(out), "val", "2007_000033")[0].tolist() == [255, 0, 19, 255]
    assert all(meta.get("t_voc20_val").is_thing)


def _pascal_context_src(tmp_path):
    from scipy.io import savemat

    pc59 = script("prepare_common").read_class_names(
        os.path.join(DATASETS_DIR, "class_names", "pascal_context_59.txt"))
    lines = ["1: accordion"] + [f"{i + 2}: {syns[0]}" for i, syns in enumerate(pc59)]
    lines.append("61: zebra crossing")
    src = tmp_path / "pc"
    (src).mkdir()
    (src / "labels.txt").write_text("\n".join(lines) + "\n")
    voc = src / "VOCdevkit" / "VOC2010"
    label_map = np.array([[0, 1, 2, 60, 61]], np.uint16).repeat(3, 0)
    for split, stem in (("train", "2008_000002"), ("val", "2008_000003")):
        _jpg(str(voc / "JPEGImages" / f"{stem}.jpg"), *label_map.shape)
        (src / "trainval").mkdir(exist_ok=True)
        savemat(str(src / "trainval" / f"{stem}.mat"), {"LabelMap": label_map})
        (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(stem + "\n2010_999999\n")
    return src


def test_pascal_context_59_and_459(tmp_path):
    src = _pascal_context_src(tmp_path)
    out59, out459 = tmp_path / "pc59", tmp_path / "pc459"
    mod = script("prepare_pascal_context")
    mod.main(["--src", str(src), "--classes", "59", "--out", str(out59)])
    mod.main(["--src", str(src), "--classes", "459", "--out", str(out459)])
    _, catalog, meta = _register(str(out59))
    assert len(meta.get("t_pc59_val").classes) == 59 and len(catalog.get("t_pc59_val")) == 1
    # 0 unlabeled, 1 accordion (not in the 59), 2 aeroplane -> 0, 60 wood -> 58, 61 -> ignored
    assert _labels(str(out59), "val", "2008_000003")[0].tolist() == [255, 255, 0, 58, 255]
    _, _, meta = _register(str(out459))
    m = meta.get("t_pc459_train")
    assert len(m.classes) == 61 and m.ignore_label == 65535 and m.classes[0] == ["accordion"]
    assert _labels(str(out459), "train", "2008_000002")[0].tolist() == [65535, 0, 1, 59, 60]


def test_ade20k_847_index_decoding(tmp_path):
    root = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE"
    values = np.array([[0, 2978, 312, 3000]])  # seg-PNG class values (1-based objectnames)
    seg = np.zeros((2, 4, 3), np.uint8)
    seg[..., 0] = (values // 256) * 10
    seg[..., 1] = values % 256
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        folder = root / split / "cultural" / "apse"
        _jpg(str(folder / f"{stem}.jpg"), 2, 4)
        _png(str(folder / f"{stem}_seg.png"), seg)
    cats = tmp_path / "ade847.txt"
    cats.write_text("2977: wall\n311: building, edifice\n")
    out = tmp_path / "ade847"
    script("prepare_ade20k_847").main(["--src", str(tmp_path / "ADE20K_2021_17_01"),
                                       "--categories", str(cats), "--out", str(out)])
    _, catalog, meta = _register(str(out))
    assert meta.get("t_ade847_val").classes == [["wall"], ["building", "edifice"]]
    assert meta.get("t_ade847_val").ignore_label == 65535
    assert _labels(str(out), "val", "ADE_val_00000001")[0].tolist() == [65535, 0, 1, 65535]


def test_coco_panoptic_and_stuff(tmp_path):
    src = tmp_path / "coco"
    _jpg(str(src / "val2017" / "000000000139.jpg"), 4, 4)
    pan = np.zeros((4, 4, 3), np.uint8)
    pan[:2, :, 0] = 5  # segment id 5
    _png(str(src / "annotations" / "panoptic_val2017" / "000000000139.png"), pan)
    spec = {"images": [{"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 4}],
            "annotations": [{"image_id": 139, "file_name": "000000000139.png",
                             "segments_info": [{"id": 5, "category_id": 1, "iscrowd": 0,
                                                "area": 8, "bbox": [0, 0, 4, 2]}]}],
            "categories": [{"id": 1, "name": "person", "isthing": 1},
                           {"id": 92, "name": "banner", "isthing": 0}]}
    (src / "annotations" / "panoptic_val2017.json").write_text(json.dumps(spec))
    stuff = tmp_path / "stuffthingmaps_trainval2017"
    _png(str(stuff / "val2017" / "000000000139.png"),
         np.array([[0, 91, 255, 11]], np.uint8).repeat(4, 0))
    out = tmp_path / "cocods"
    script("prepare_coco").main(["--src", str(src), "--out", str(out), "--splits", "val2017",
                                 "--stuff", str(stuff)])
    names, catalog, meta = _register(str(out))
    assert {"t_cocods_val2017", "t_cocods_val2017_panoptic"} <= set(names)
    assert len(meta.get("t_cocods_val2017").classes) == 171
    assert meta.get("t_cocods_val2017").is_thing[:81] == [True] * 80 + [False]
    assert _labels(str(out), "val2017", "000000000139")[0].tolist() == [0, 80, 255, 255]
    assert len(catalog.get("t_cocods_val2017_panoptic")) == 1


def test_source_errors(tmp_path):
    common = script("prepare_common")
    with pytest.raises(FileNotFoundError):
        common.Source(str(tmp_path / "missing"))
    (tmp_path / "x.bin").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a folder"):
        common.Source(str(tmp_path / "x.bin"))
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="right download"):
        common.Source(str(tmp_path / "d")).find_root("annotations/training")
