import pytest

from mmmask.registry import DATA_MAPPER_REGISTRY, DATASET_REGISTRY, _Registry


def test_unknown_name_lists_valid_names():
    import mmmask.data  # noqa: F401  (registers the mappers)

    with pytest.raises(KeyError) as e:
        DATA_MAPPER_REGISTRY.get("SegmentationMaper")
    msg = str(e.value)
    assert "SegmentationMapper" in msg and "CaptionMapper" in msg
    assert "Did you mean 'SegmentationMapper'" in msg and "DATA_MAPPER" in msg


def test_register_and_names():
    reg = _Registry("TOY")

    @reg.register()
    class Alpha:
        pass

    assert reg.get("Alpha") is Alpha and reg.names() == ["Alpha"]
    with pytest.raises(KeyError, match="Valid names: Alpha"):
        reg.get("Beta")
    with pytest.raises(AssertionError):  # fvcore refuses duplicate names
        reg.register(Alpha)
    with pytest.raises(KeyError, match="none registered"):
        _Registry("EMPTY").get("x")


def test_dataset_registry_builds_shapes():
    import mmmask.data  # noqa: F401
    from mmmask.config import get_cfg
    from mmmask.data import DatasetCatalog

    cfg = get_cfg()
    cfg.DATASETS.SHAPES.VAL_SIZE = 3
    assert "shapes_ov_val" in DATASET_REGISTRY.get("shapes_ov")(cfg)
    assert len(DatasetCatalog.get("shapes_ov_val")) == 3
    DATASET_REGISTRY.get("shapes_ov")()  # back to the defaults
    assert len(DatasetCatalog.get("shapes_ov_val")) == 200
