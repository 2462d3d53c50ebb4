"""COCO panoptic and COCO-Stuff-171 -> one mmmask dataset root.

    python datasets/prepare_coco.py --src COCO_ROOT --out $MMMASK_DATASETS/coco \
        [--splits val2017,train2017] [--stuff STUFFTHINGMAPS] [--copy]

``--src`` (extracted): ``{train2017,val2017}/*.jpg``, ``annotations/panoptic_<split>.json`` and
``annotations/panoptic_<split>/*.png`` (or the ``annotations/panoptic_<split>.zip`` that the
panoptic download nests, which is extracted). These are already COCO panoptic: they are linked
(``--copy``: copied) into ``OUT/images/<split>`` and ``OUT/annotations/``; the reader registers
``<prefix>_<split>_panoptic`` with the 133 categories of the JSON.

``--stuff``: ``stuffthingmaps_trainval2017`` (folder or .zip) with ``<split>/*.png`` whose value
is the COCO category id - 1 (0..181) and 255 = unlabeled. The 171 ids in use (80 things, 91
stuff) become 0..170 in id order, every other value 255, written to ``OUT/annotations/<split>``
with ``OUT/classes.json`` (``datasets/class_names/coco_stuff_171.txt``, things first): the
semantic split ``<prefix>_<split>``.
"""

import argparse
import os
import zipfile

import numpy as np
from PIL import Image

from prepare_common import (CLASS_NAMES_DIR, Source, default_out, link_or_copy, lookup_table,
                            progress, read_class_names, stem_of)

# COCO thing ids (1..90) that are not used; stuff ids are 92..182.
_UNUSED_THING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_STUFF_IDS = [i for i in range(1, 91) if i not in _UNUSED_THING_IDS] + list(range(92, 183))


def coco_stuff_lut() -> np.ndarray:
    """uint8 lookup from a stuffthingmaps value (COCO id - 1) to 0..170; 255 elsewhere."""
    return lookup_table({cid - 1: j for j, cid in enumerate(COCO_STUFF_IDS)}, 256, 255)


def write_stuff_classes(out: str) -> None:
    import json

    classes = read_class_names(os.path.join(CLASS_NAMES_DIR, "coco_stuff_171.txt"))
    if len(classes) != len(COCO_STUFF_IDS):
        raise ValueError(f"coco_stuff_171.txt has {len(classes)} classes; expected 171")
    with open(os.path.join(out, "classes.json"), "w", encoding="utf-8") as f:
        json.dump({"classes": classes, "thing": list(range(80)), "stuff": list(range(80, 171)),
                   "ignore_label": 255}, f, indent=0)


def prepare_panoptic(src: str, out: str, split: str, copy: bool) -> None:
    ann = os.path.join(src, "annotations")
    json_file = os.path.join(ann, f"panoptic_{split}.json")
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file} not found (panoptic_annotations_trainval2017)")
    png_dir = os.path.join(ann, f"panoptic_{split}")
    if not os.path.isdir(png_dir):
        nested = png_dir + ".zip"
        if not os.path.isfile(nested):
            raise FileNotFoundError(f"neither {png_dir}/ nor {nested} exists")
        with zipfile.ZipFile(nested) as z:
            z.extractall(os.path.join(out, "annotations"))
        png_dir = os.path.join(out, "annotations", f"panoptic_{split}")
    else:
        link_or_copy(png_dir, os.path.join(out, "annotations", f"panoptic_{split}"), copy)
    link_or_copy(json_file, os.path.join(out, "annotations", f"panoptic_{split}.json"), copy)


def prepare_stuff(stuff: Source, out: str, split: str) -> int:
    lut = coco_stuff_lut()
    ann_dir = os.path.join(out, "annotations", split)
    os.makedirs(ann_dir, exist_ok=True)
    names = stuff.glob(f"*{split}/*.png")
    for name in progress(names, f"stuff {split}"):
        Image.fromarray(lut[stuff.image_array(name)]).save(
            os.path.join(ann_dir, stem_of(name) + ".png"))
    return len(names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="extracted COCO root (images + annotations)")
    p.add_argument("--out", default=default_out("coco"))
    p.add_argument("--splits", default="val2017,train2017")
    p.add_argument("--stuff", help="stuffthingmaps_trainval2017 folder or .zip")
    p.add_argument("--no-panoptic", action="store_true", help="only COCO-Stuff")
    p.add_argument("--copy", action="store_true", help="copy instead of symlinking")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    stuff = Source(args.stuff) if args.stuff else None
    if stuff is not None:
        write_stuff_classes(args.out)
    for split in args.splits.split(","):
        images = os.path.join(args.src, split)
        if not os.path.isdir(images):
            raise FileNotFoundError(f"{images}/ not found (extract {split}.zip into --src)")
        link_or_copy(images, os.path.join(args.out, "images", split), args.copy)
        if not args.no_panoptic:
            prepare_panoptic(args.src, args.out, split, args.copy)
        n = prepare_stuff(stuff, args.out, split) if stuff is not None else 0
        print(f"{split}: images linked, panoptic {'skipped' if args.no_panoptic else 'ready'}, "
              f"{n} COCO-Stuff label maps")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
