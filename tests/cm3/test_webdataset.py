import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mmmask.cm3.data import CM3DocumentMapper
from mmmask.cm3.webdataset import (
    expand_shards, iter_image_text, list_image_text_records, register_webdataset,
)


def _png(color, size=(20, 12)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def shards(tmp_path):
    paths = []
    for s in range(2):
        p = tmp_path / f"shard-{s:03d}.tar"
        with tarfile.open(p, "w") as tar:
            _add(tar, f"{s}000.jpg", _png((255, 0, 0)))  # PNG bytes under .jpg: decoded anyway
            _add(tar, f"{s}000.txt", "a red square ☃".encode())
            _add(tar, f"sub/{s}001.png", _png((0, 0, 255)))
            _add(tar, f"sub/{s}001.json", json.dumps({"caption": "blue"}).encode())
            _add(tar, f"{s}002.txt", b"caption without image")
            _add(tar, f"{s}003.png", b"not an image")
            _add(tar, f"{s}003.txt", b"broken")
        paths.append(str(p))
    return tmp_path, paths


def test_reader_groups_by_key(shards):
    root, paths = shards
    got = list(iter_image_text(paths))
    assert [g["key"] for g in got] == ["0000", "sub/0001", "1000", "sub/1001"]
    assert got[0]["caption"] == "a red square ☃" and got[1]["caption"] == "blue"
    assert got[0]["image"].shape == (12, 20, 3) and got[0]["image"].dtype == np.uint8
    assert tuple(got[1]["image"][0, 0]) == (0, 0, 255)


def test_shard_expansion(shards):
    root, paths = shards
    assert expand_shards(str(root / "shard-{000..001}.tar")) == paths
    assert expand_shards(str(root / "shard-*.tar")) == paths


def test_catalog_records_and_mapper(shards):
    from mmmask.data.catalog import DatasetCatalog

    root, paths = shards
    recs = list_image_text_records(paths, max_samples=3)
    assert len(recs) == 3 and recs[0]["webdataset"]["shard"] == paths[0]
    register_webdataset("test_cm3_wds", str(root / "shard-*.tar"), overwrite=True)
    recs = DatasetCatalog.get("test_cm3_wds")
    assert len(recs) == 4
    mapper = CM3DocumentMapper(is_train=False, image_size=16)
    out = mapper(recs[1])
    assert out["image"].shape == (3, 16, 16) and out["caption"] == "blue"
    assert out["cm3_seed"] == mapper(recs[1])["cm3_seed"]  # deterministic at test time
    with pytest.raises(ValueError):
        register_webdataset("test_cm3_none", str(root / "nothing-*.tar"))
