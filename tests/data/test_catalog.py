import pytest

from mmmask.data import DatasetCatalog, MetadataCatalog, register_dataset


def test_register_is_lazy_and_get_calls():
    calls = []

    def fn():
        calls.append(1)
        return [{"image_id": 0}]

    register_dataset("cat_test_lazy", fn, overwrite=True, classes=["a", ["b", "bee"]])
    assert calls == []
    assert DatasetCatalog.get("cat_test_lazy") == [{"image_id": 0}]
    assert calls == [1]
    meta = MetadataCatalog.get("cat_test_lazy")
    assert meta.classes == [["a"], ["b", "bee"]]
    assert meta.class_names == ["a", "b"]
    assert meta.ignore_label == 255 and meta.is_seen is None


def test_unknown_dataset_lists_registered_and_closest():
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("shapes_ov_trian")
    msg = str(e.value)
    assert "shapes_ov_train" in msg and "Did you mean 'shapes_ov_train'" in msg
    assert "shapes_ov_val" in msg and "shapes_ov_captions" in msg


def test_register_twice_needs_overwrite():
    register_dataset("cat_test_twice", lambda: [], overwrite=True)
    with pytest.raises(ValueError, match="already registered"):
        DatasetCatalog.register("cat_test_twice", lambda: [])
    DatasetCatalog.register("cat_test_twice", lambda: [1], overwrite=True)
    assert DatasetCatalog.get("cat_test_twice") == [1]
    with pytest.raises(TypeError):
        DatasetCatalog.register("cat_test_bad", "not callable", overwrite=True)


def test_metadata_attributes_and_errors():
    meta = MetadataCatalog.get("cat_test_meta")
    meta.set(evaluator_type="sem_seg", thing_classes=["x"])
    assert meta.evaluator_type == "sem_seg"
    assert meta.get("missing", 7) == 7 and "thing_classes" in meta
    with pytest.raises(AttributeError) as e:
        _ = meta.evaluator_typ
    assert "cat_test_meta" in str(e.value) and "evaluator_type" in str(e.value)
    with pytest.raises(ValueError, match="different value"):
        meta.evaluator_type = "panoptic"
    meta.set(evaluator_type="panoptic", overwrite=True)
    assert meta.evaluator_type == "panoptic"
    meta.evaluator_type = "panoptic"  # same value is fine


def test_metadata_lengths_checked():
    with pytest.raises(ValueError, match="is_thing"):
        register_dataset("cat_test_len", lambda: [], overwrite=True, classes=["a", "b"],
                         is_thing=[True])


def test_builtin_metadata():
    meta = MetadataCatalog.get("shapes_ov_train")
    assert len(meta.classes) == len(meta.is_thing) == len(meta.is_seen) == 70
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert "blue ring" in meta.class_names and "brick wall" in meta.class_names
    assert not all(meta.is_seen) and any(meta.is_seen)
