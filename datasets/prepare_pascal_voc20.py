"""Pascal VOC 2012, 20 classes (no background) -> mmmask user layout.

    python datasets/prepare_pascal_voc20.py --src VOCtrainval_11-May-2012.tar \
        --out $MMMASK_DATASETS/pascal_voc20

Source: ``VOCdevkit/VOC2012/JPEGImages/*.jpg``, ``SegmentationClass/*.png`` (palette PNG,
indices 0 = background, 1..20 the classes, 255 = object border) and
``ImageSets/Segmentation/{train,val}.txt``. Labels become 0..19 (index - 1); background and
border become 255 (ignored), as in the open-vocabulary "PAS-20" benchmark.
"""

import argparse
import os

import numpy as np

from prepare_common import (CLASS_NAMES_DIR, LayoutWriter, Source, default_out, lookup_table,
                            progress, read_class_names)


def voc20_lut() -> np.ndarray:
    return lookup_table({v: v - 1 for v in range(1, 21)}, 256, 255)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="VOCdevkit folder or the VOC2012 .tar")
    p.add_argument("--out", default=default_out("pascal_voc20"))
    p.add_argument("--splits", default="train,val")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    src = Source(args.src)
    root = src.find_root("ImageSets/Segmentation/val.txt")
    classes = read_class_names(os.path.join(CLASS_NAMES_DIR, "pascal_voc_20.txt"))
    writer = LayoutWriter(args.out, classes, ignore_label=255, thing=list(range(20)),
                          overwrite=args.overwrite)
    lut = voc20_lut()
    for split in args.splits.split(","):
        ids = src.read(f"{root}ImageSets/Segmentation/{split}.txt").decode().split()
        for stem in progress(ids, split):
            labels = lut[src.image_array(f"{root}SegmentationClass/{stem}.png")]
            writer.add(split, stem, src.read(f"{root}JPEGImages/{stem}.jpg"), ".jpg", labels)
    print(writer.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
