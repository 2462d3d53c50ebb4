"""Shared fixtures of the data tests: a tiny Shapes-OV export in both formats."""

import pytest

from mmmask.data.export import write_shapes_dataset

SPLITS = {"train": 6, "val": 4}


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A Shapes-OV root (64 px) with the user layout, COCO panoptic and COCO instances."""
    root = tmp_path_factory.mktemp("shapes_export") / "mini"
    write_shapes_dataset(str(root), SPLITS, size=64, seed=3, workers=1)
    return root
