"""Data: dataset catalog and metadata, readers of standard formats, transforms, mappers, loaders.

Importing ``mmmask.data`` registers the built-in Shapes-OV datasets (``shapes_ov_train``,
``shapes_ov_val``, ``shapes_ov_test``, ``shapes_ov_captions``; default sizes, see
:func:`register_builtin`) and the mappers ``SegmentationMapper`` and ``CaptionMapper`` in
``DATA_MAPPER_REGISTRY``.
"""

from .builtin import ShapesRecords, register_builtin
from .catalog import DatasetCatalog, Metadata, MetadataCatalog, register_dataset
from .coco import load_coco_instances, load_coco_panoptic, segmentation_to_mask
from .export import write_shapes_dataset
from .image_io import (
    ImageReadError,
    ImageTooLargeError,
    read_image,
    read_label_png,
    read_panoptic_png,
    resolve_in_root,
)
from .loader import build_mapper, build_test_loader, build_train_loader
from .mappers import CaptionMapper, SegmentationMapper
from .readers import load_classes_json, load_user_split, register_dataset_root
from .transforms import build_test_transform, build_train_transform
from .vocab import Vocabulary, parse_vocab, read_vocab_file

__all__ = [
    "DatasetCatalog",
    "MetadataCatalog",
    "Metadata",
    "register_dataset",
    "register_builtin",
    "register_dataset_root",
    "ShapesRecords",
    "load_classes_json",
    "load_user_split",
    "load_coco_panoptic",
    "load_coco_instances",
    "segmentation_to_mask",
    "write_shapes_dataset",
    "ImageReadError",
    "ImageTooLargeError",
    "read_image",
    "read_label_png",
    "read_panoptic_png",
    "resolve_in_root",
    "build_train_transform",
    "build_test_transform",
    "SegmentationMapper",
    "CaptionMapper",
    "build_mapper",
    "build_train_loader",
    "build_test_loader",
    "Vocabulary",
    "parse_vocab",
    "read_vocab_file",
]

register_builtin()
