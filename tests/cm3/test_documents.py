import pytest

import mmmask.cm3  # noqa: F401  (registers the CM3 documents)
from mmmask.config import get_cfg
from mmmask.data.catalog import DatasetCatalog
from mmmask.data.loader import build_train_loader, register_datasets
from mmmask.data.shapes import render_object_crop


def _cfg(kinds=("scene",), size=16):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER = "CM3DocumentMapper"
    cfg.DATASETS.TRAIN = ("shapes_ov_documents",)
    cfg.CM3.VQ.IMAGE_SIZE = size
    cfg.CM3.DOCUMENT_KINDS = kinds
    cfg.SOLVER.IMS_PER_BATCH = 3
    return cfg


@pytest.fixture(autouse=True)
def _restore_catalog():
    yield
    register_datasets(get_cfg())  # the defaults again for the other tests


def test_default_documents_are_scenes():
    register_datasets(_cfg())
    recs = DatasetCatalog.get("shapes_ov_documents")
    assert {recs[i]["shapes"]["kind"] for i in range(6)} == {"scene"}
    assert recs[0]["shapes"]["size"] == 16  # CM3.VQ.IMAGE_SIZE reaches the records


def test_object_centric_documents_cycle_kinds():
    register_datasets(_cfg(("crop", "region", "scene")))
    recs = DatasetCatalog.get("shapes_ov_documents")
    assert [recs[i]["shapes"]["kind"] for i in range(6)] == ["crop", "region", "scene"] * 2


def test_train_loader_reads_the_config_kinds():
    # the loader itself registers the datasets from its config: a crop document names one object
    loader = build_train_loader(_cfg(("crop",)))
    batch = next(iter(loader))
    assert len(batch) == 3
    for doc in batch:
        assert doc["image"].shape == (3, 16, 16)
        assert doc["caption"] == render_object_crop(0, int(doc["image_id"]), 16)[1]


def test_bad_kind_names_the_key():
    with pytest.raises(ValueError, match="CM3.DOCUMENT_KINDS"):
        register_datasets(_cfg(("crops",)))
