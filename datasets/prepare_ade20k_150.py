"""ADE20K-150 (SceneParsing, ADEChallengeData2016) -> mmmask user layout.

    python datasets/prepare_ade20k_150.py --src ADEChallengeData2016.zip \
        --out $MMMASK_DATASETS/ade20k_150

Source: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png`` (values 0..150, 0 = "other"). Labels become
0..149 (value - 1) with 0 -> 255 (ignored); splits are named ``train`` and ``val``. Class names
with synonyms: ``datasets/class_names/ade20k_150.txt``.
"""

import argparse
import os

import numpy as np

from prepare_common import (CLASS_NAMES_DIR, LayoutWriter, Source, default_out, lookup_table,
                            progress, read_class_names, stem_of)

SPLITS = {"training": "train", "validation": "val"}


def ade150_lut() -> np.ndarray:
    """uint8 lookup: 0 -> 255, v -> v - 1 for v in 1..150, anything else -> 255."""
    return lookup_table({v: v - 1 for v in range(1, 151)}, 256, 255)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="ADEChallengeData2016 folder or .zip")
    p.add_argument("--out", default=default_out("ade20k_150"))
    p.add_argument("--splits", default="training,validation")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    src = Source(args.src)
    root = src.find_root("annotations/validation") if src.glob("*annotations/validation/*") \
        else src.find_root("annotations/training")
    classes = read_class_names(os.path.join(CLASS_NAMES_DIR, "ade20k_150.txt"))
    writer = LayoutWriter(args.out, classes, ignore_label=255, overwrite=args.overwrite)
    lut = ade150_lut()
    for split in args.splits.split(","):
        anns = {stem_of(n): n for n in src.glob(f"{root}annotations/{split}/*.png")}
        images = src.glob(f"{root}images/{split}/*.jpg")
        for name in progress(images, split):
            stem = stem_of(name)
            if stem not in anns:
                raise FileNotFoundError(f"{name} has no annotation in {root}annotations/{split}/")
            labels = lut[src.image_array(anns[stem])]
            writer.add(SPLITS.get(split, split), stem, src.read(name), ".jpg", labels)
    print(writer.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
