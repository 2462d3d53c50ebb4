"""ADE20K-847 (the full ADE20K, release ADE20K_2021_17_01) -> mmmask user layout.

    python datasets/prepare_ade20k_847.py --src ADE20K_2021_17_01.zip \
        --categories ade20k_847.txt --out $MMMASK_DATASETS/ade20k_847

Source: ``ADE20K_2021_17_01/images/ADE/{training,validation}/<scene>/.../ADE_*.jpg`` with a
``ADE_*_seg.png`` next to each image. In the seg PNG, the object class of a pixel is
``R // 10 * 256 + G`` (0 = unlabeled), a 1-based index into ``objectnames`` of
``index_ade20k.pkl``; B encodes instances and is not used.

The 847 classes are the full-ADE classes used by the open-vocabulary papers (the list of
``{"name", "id", "trainId"}`` in the openseg repositories, ``id`` = index into ``objectnames``).
Give them with ``--categories`` as ``id: name, synonym`` lines, in trainId order (the ``id`` is
that 0-based ``objectnames`` index; ``--id-offset`` is what to add to get the seg-PNG value,
default 1). A pixel whose class is not listed becomes 65535 (ignored); labels are 0..846 in
16-bit PNGs. Splits: ``training`` -> ``train``, ``validation`` -> ``val``.
"""

import argparse

import numpy as np

from prepare_common import (IGNORE_16BIT, LayoutWriter, Source, default_out, lookup_table,
                            progress, read_id_class_names, stem_of)

SPLITS = {"training": "train", "validation": "val"}


def decode_ade_classes(seg_rgb: np.ndarray) -> np.ndarray:
    """Object class index [H, W] (int64, 0 = unlabeled) of a full-ADE ``*_seg.png`` [H, W, 3]."""
    rgb = seg_rgb.astype(np.int64)
    return rgb[..., 0] // 10 * 256 + rgb[..., 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="ADE20K_2021_17_01 folder or .zip")
    p.add_argument("--categories", required=True,
                   help="'id: name, synonym' lines of the 847 classes, in trainId order")
    p.add_argument("--id-offset", type=int, default=1,
                   help="seg-PNG class value = id + this (default 1: ids index objectnames)")
    p.add_argument("--out", default=default_out("ade20k_847"))
    p.add_argument("--splits", default="training,validation")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cats = read_id_class_names(args.categories)
    classes = [names for _, names in cats]
    lut = lookup_table({cid + args.id_offset: j for j, (cid, _) in enumerate(cats)},
                       256 * 26, IGNORE_16BIT)  # R // 10 <= 25
    src = Source(args.src)
    root = src.find_root("images/ADE/validation") if src.glob("*images/ADE/validation/*") \
        else src.find_root("images/ADE/training")
    writer = LayoutWriter(args.out, classes, ignore_label=IGNORE_16BIT, overwrite=args.overwrite)
    for split in args.splits.split(","):
        images = [n for n in src.glob(f"{root}images/ADE/{split}/*.jpg")]
        for name in progress(images, split):
            seg = src.image_array(name[: -len(".jpg")] + "_seg.png")
            writer.add(SPLITS.get(split, split), stem_of(name), src.read(name), ".jpg",
                       lut[decode_ade_classes(seg[..., :3])])
    print(writer.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
