import itertools

import pytest
import torch

from mmmask.config import get_cfg
from mmmask.data import build_test_loader, build_train_loader, register_builtin, register_dataset
from mmmask.data.loader import TrainSampler


@pytest.fixture(autouse=True)
def _restore_builtin_sizes():
    yield
    register_builtin()  # the loaders re-register Shapes-OV with the sizes of their cfg


def _cfg(batch=4, workers=0, size=32):
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.INPUT.IMAGE_SIZE = size
    cfg.DATASETS.SHAPES.TRAIN_SIZE = 10
    cfg.DATASETS.SHAPES.VAL_SIZE = 7
    cfg.DATASETS.SHAPES.IMAGE_SIZE = size
    return cfg


def _ids(batch):
    return [x["image_id"] for x in batch]


def _take(loader, n):
    return list(itertools.islice(loader, n))


def _index_mapper(record):
    return {"image_id": record["image_id"], "r": float(torch.rand(()))}


def test_two_ranks_see_the_global_batches():
    cfg = _cfg(batch=4)
    n_iter = 7  # 28 samples: crosses two epoch boundaries of the 10 records
    glob = _take(build_train_loader(cfg, mapper=_index_mapper), n_iter)
    r0 = _take(build_train_loader(cfg, 0, 2, mapper=_index_mapper), n_iter)
    r1 = _take(build_train_loader(cfg, 1, 2, mapper=_index_mapper), n_iter)
    for g, a, b in zip(glob, r0, r1):
        assert len(a) == len(b) == 2
        assert a + b == g  # same records and the same random draws per sample
    # every epoch visits each record once
    stream = [i for b in glob for i in _ids(b)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # reshuffled per epoch


def test_augmented_batches_identical_across_sharding():
    cfg = _cfg(batch=2, size=32)
    glob = _take(build_train_loader(cfg), 1)[0]
    r0 = _take(build_train_loader(cfg, 0, 2), 1)[0]
    r1 = _take(build_train_loader(cfg, 1, 2), 1)[0]
    for g, x in zip(glob, r0 + r1):
        assert g["image_id"] == x["image_id"]
        assert torch.equal(g["image"], x["image"]) and torch.equal(g["sem_seg"], x["sem_seg"])
        assert torch.equal(g["instances"]["masks"], x["instances"]["masks"])


def test_resume_from_start_iter():
    cfg = _cfg(batch=3)
    full = _take(build_train_loader(cfg, mapper=_index_mapper), 9)
    resumed = _take(build_train_loader(cfg, start_iter=5, mapper=_index_mapper), 4)
    assert resumed == full[5:]
    s = TrainSampler(10, 4, seed=0, rank=1, world_size=2, start_iter=1000)
    assert next(iter(s)) == s.batch(1000)
    assert [p for _, p in s.batch(1000)] == [4002, 4003]


def test_seed_changes_order():
    cfg = _cfg(batch=5)
    a = _ids(_take(build_train_loader(cfg, mapper=_index_mapper), 1)[0])
    cfg.SEED = 1
    b = _ids(_take(build_train_loader(cfg, mapper=_index_mapper), 1)[0])
    assert a != b


def test_workers_give_the_same_batches():
    cfg = _cfg(batch=2)
    a = _take(build_train_loader(cfg, mapper=_index_mapper), 3)
    cfg.DATALOADER.NUM_WORKERS = 1
    b = _take(build_train_loader(cfg, mapper=_index_mapper), 3)
    assert a == b


def test_bad_sharding_and_empty_dataset():
    with pytest.raises(ValueError, match="multiple"):
        build_train_loader(_cfg(batch=3), 0, 2, mapper=_index_mapper)
    with pytest.raises(ValueError, match="rank"):
        build_train_loader(_cfg(batch=4), 2, 2, mapper=_index_mapper)
    register_dataset("loader_empty", lambda: [], overwrite=True)
    with pytest.raises(ValueError, match="no records"):
        build_train_loader(_cfg(), dataset_names=["loader_empty"], mapper=_index_mapper)


def test_train_sizes_from_cfg_and_several_datasets():
    cfg = _cfg(batch=16)
    register_dataset("loader_extra", lambda: [{"image_id": "x"}] * 6, overwrite=True)
    cfg.DATASETS.TRAIN = ("shapes_ov_train", "loader_extra")
    ids = _ids(_take(build_train_loader(cfg, mapper=_index_mapper), 1)[0])
    assert sorted(i for i in ids if i != "x") == list(range(10)) and ids.count("x") == 6


def test_test_loader_shards_cover_all_once():
    cfg = _cfg()
    full = [b for b in build_test_loader(cfg, "shapes_ov_val", mapper=_index_mapper)]
    assert all(len(b) == 1 for b in full)
    assert [b[0]["image_id"] for b in full] == list(range(7))
    shards = [[b[0]["image_id"] for b in build_test_loader(cfg, "shapes_ov_val", r, 3,
                                                           mapper=_index_mapper)]
              for r in range(3)]
    assert sum(shards, []) == list(range(7))
    out = next(iter(build_test_loader(cfg, "shapes_ov_val")))[0]
    assert out["image"].shape == (3, 32, 32) and "sem_seg" in out
