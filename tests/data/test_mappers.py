import numpy as np
import pytest
import torch

from mmmask.config import get_cfg
from mmmask.data import (
    CaptionMapper,
    DatasetCatalog,
    SegmentationMapper,
    register_dataset_root,
    shapes,
)
from mmmask.data.image_io import ImageTooLargeError
from mmmask.registry import DATA_MAPPER_REGISTRY


def _cfg(size=48):
    cfg = get_cfg()
    cfg.INPUT.IMAGE_SIZE = size
    return cfg


def _shapes_record(split="train", index=0, size=48):
    return {"image_id": index, "height": size, "width": size,
            "shapes": {"seed": 0, "split": split, "index": index, "size": size}}


def _check_contract(out, h, w):
    assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    assert out["sem_seg"].dtype == torch.long and out["sem_seg"].shape == (h, w)
    ins = out["instances"]
    n = len(ins["classes"])
    assert ins["masks"].dtype == torch.bool and ins["masks"].shape == (n, h, w)
    assert ins["classes"].dtype == torch.long and ins["is_thing"].dtype == torch.bool
    assert ins["is_thing"].shape == (n,)
    for m, c in zip(ins["masks"], ins["classes"]):  # each segment is labelled with its class
        assert m.any() and (out["sem_seg"][m] == c).all()


def test_registered():
    assert DATA_MAPPER_REGISTRY.get("SegmentationMapper") is SegmentationMapper
    assert DATA_MAPPER_REGISTRY.get("CaptionMapper") is CaptionMapper


def test_shapes_train_record():
    mapper = SegmentationMapper(_cfg(64), True)
    assert mapper.is_train
    seen = np.asarray(shapes.IS_SEEN)
    for i in range(4):
        torch.manual_seed(i)
        out = mapper(_shapes_record(index=i, size=48))
        assert out["image"].shape == (3, 64, 64)
        assert (out["height"], out["width"], out["image_id"]) == (48, 48, i)
        _check_contract(out, 64, 64)
        labels = out["sem_seg"].unique()
        labels = labels[labels != 255]
        assert seen[labels.numpy()].all()  # train split: unseen classes never labelled
        ins = out["instances"]
        assert (ins["is_thing"] == torch.tensor([shapes.IS_THING[c] for c in ins["classes"]])).all()


def test_shapes_eval_record_keeps_gt_size():
    cfg = _cfg()
    cfg.INPUT.TEST_SIZE = 64
    mapper = SegmentationMapper(cfg, False)
    out = mapper(_shapes_record("val", 1, 32))
    assert out["image"].shape == (3, 64, 64)
    assert (out["height"], out["width"]) == (32, 32)
    _check_contract(out, 32, 32)
    s = shapes.render_sample(0, "val", 1, 32)
    assert torch.equal(out["sem_seg"], torch.from_numpy(s.sem_seg).long())
    things = sorted(d["category_id"] for d in s.instances if d["mask"].any())
    ins = out["instances"]
    assert sorted(ins["classes"][ins["is_thing"]].tolist()) == things
    stuff = ins["classes"][~ins["is_thing"]].tolist()
    assert stuff == sorted(set(np.unique(s.sem_seg).tolist()) - set(things) - {255})


def test_exported_formats_give_the_same_segments(shapes_root):
    register_dataset_root(shapes_root, "mp")
    cfg = _cfg()
    outs = {}
    for name in ("mp_val", "mp_val_panoptic", "mp_val_instances"):
        mapper = SegmentationMapper(cfg, False, dataset_name=name)
        outs[name] = mapper(DatasetCatalog.get(name)[2])
    sem, pan, inst = outs["mp_val"], outs["mp_val_panoptic"], outs["mp_val_instances"]
    s = shapes.render_sample(3, "val", 2, 64)
    for o in outs.values():
        assert o["image"].shape == (3, 64, 64)
        assert torch.equal(o["image"], torch.from_numpy(s.image).permute(2, 0, 1))
    assert "sem_seg" not in inst
    assert torch.equal(sem["sem_seg"], pan["sem_seg"])
    _check_contract(sem, 64, 64)
    _check_contract(pan, 64, 64)
    # panoptic: thing instances + stuff regions; instances file: the same things
    things = pan["instances"]["masks"][pan["instances"]["is_thing"]]
    assert torch.equal(inst["instances"]["masks"], things)
    # semantic-only records: one segment per class present, is_thing from classes.json
    present = sem["sem_seg"].unique()
    assert sem["instances"]["classes"].tolist() == present[present != 255].tolist()
    flags = [shapes.IS_THING[c] for c in sem["instances"]["classes"]]
    assert sem["instances"]["is_thing"].tolist() == flags


def test_semantic_record_training(shapes_root):
    register_dataset_root(shapes_root, "mpt")
    mapper = SegmentationMapper(_cfg(32), True, dataset_name="mpt_train")
    torch.manual_seed(0)
    out = mapper(DatasetCatalog.get("mpt_train")[0])
    assert out["image"].shape == (3, 32, 32)
    _check_contract(out, 32, 32)


def test_image_size_limit(shapes_root):
    register_dataset_root(shapes_root, "mpl")
    mapper = SegmentationMapper(_cfg(), False, max_pixels=100)
    with pytest.raises(ImageTooLargeError, match="64 x 64"):
        mapper(DatasetCatalog.get("mpl_val")[0])


def test_bad_label_id(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "l.png")
    mapper = SegmentationMapper(_cfg(), False, is_thing=[False, True])
    rec = {"image_id": 0, "file_name": str(tmp_path / "a.png"),
           "sem_seg_file_name": str(tmp_path / "l.png")}
    with pytest.raises(ValueError, match="label id 9"):
        mapper(rec)
    with pytest.raises(KeyError, match="file_name"):
        mapper({"image_id": 3})


def test_image_only_record(tmp_path):
    from PIL import Image

    Image.new("RGB", (5, 3), (1, 2, 3)).save(tmp_path / "a.png")
    out = SegmentationMapper(_cfg(), False)({"image_id": "a", "file_name": str(tmp_path / "a.png")})
    assert out["image"].shape == (3, 3, 5) and "sem_seg" not in out and "instances" not in out


def test_caption_mapper():
    cfg = _cfg()
    cfg.MODEL.CLIP.IMAGE_SIZE = 24
    mapper = CaptionMapper(cfg, False)
    recs = DatasetCatalog.get("shapes_ov_captions")
    kinds = {recs[i]["shapes"]["kind"] for i in range(4)}
    assert kinds == {"crop", "scene"}
    for i in range(4):
        out = mapper(recs[i])
        assert out["image"].shape == (3, 24, 24) and out["image"].dtype == torch.uint8
        assert isinstance(out["caption"], str) and out["caption"]
    a, b = mapper(recs[0]), mapper(recs[0])
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    with pytest.raises(ValueError, match="crop, scene"):
        mapper({"shapes": {"seed": 0, "index": 0, "kind": "bad"}})
