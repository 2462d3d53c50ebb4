"""Pascal Context, 59 or 459 classes -> mmmask user layout.

    python datasets/prepare_pascal_context.py --classes 59 --src PASCAL_CONTEXT_ROOT \
        --out $MMMASK_DATASETS/pascal_context59        # or --classes 459 ... pascal_context459

``--src`` is a folder (or .tar/.zip) holding, anywhere inside:

- ``trainval/*.mat`` (``trainval.tar.gz`` of the Pascal Context release): ``LabelMap`` uint16
  [H, W] with ids 1..459 of ``labels.txt`` (``"id: name"`` lines), 0 = unlabeled;
- ``labels.txt``;
- ``VOCdevkit/VOC2010/JPEGImages/*.jpg`` and ``ImageSets/Main/{train,val}.txt`` (the
  split lists: train 4,998 / val 5,105 images of VOC 2010 with a label map).

459 classes: id -> id - 1 (0..458), 0 -> 65535 (ignored); 16-bit PNGs, classes.json
``ignore_label`` 65535; names from ``labels.txt``. 59 classes: the 59 frequent classes of
``datasets/class_names/pascal_context_59.txt`` (found in ``labels.txt`` by name; the first
synonym, then the others), 0..58 in that order; every other id -> 255.
"""

import argparse
import io
import os

import numpy as np
from scipy.io import loadmat

from prepare_common import (CLASS_NAMES_DIR, IGNORE_16BIT, LayoutWriter, Source, default_out,
                            lookup_table, progress, read_class_names, read_id_class_names)


def pc459_lut(num: int = 459) -> np.ndarray:
    return lookup_table({v: v - 1 for v in range(1, num + 1)}, 65536, IGNORE_16BIT)


def pc59_mapping(labels: list[tuple[int, list[str]]], classes59: list[list[str]]) -> dict[int, int]:
    """{459-id: 59-id} by name; KeyError listing the names missing from labels.txt."""
    by_name = {n.lower(): i for i, names in labels for n in names}
    mapping, missing = {}, []
    for j, syns in enumerate(classes59):
        hit = next((by_name[s.lower()] for s in syns if s.lower() in by_name), None)
        if hit is None:
            missing.append(syns[0])
        else:
            mapping[hit] = j
    if missing:
        raise KeyError(f"labels.txt lacks the Pascal Context 59 classes {missing}")
    return mapping


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True)
    p.add_argument("--classes", type=int, choices=(59, 459), default=59)
    p.add_argument("--out", default=None)
    p.add_argument("--splits", default="train,val")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = args.out or default_out(f"pascal_context{args.classes}")
    src = Source(args.src)
    labels_name = src.glob("*labels.txt")
    if not labels_name:
        raise FileNotFoundError(f"{args.src}: no labels.txt (Pascal Context release) inside")
    local = os.path.join(out + ".labels.txt")
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    with open(local, "wb") as f:
        f.write(src.read(labels_name[0]))
    labels = read_id_class_names(local)
    os.remove(local)
    if args.classes == 459:
        classes = [names for _, names in sorted(labels)]
        lut, ignore = pc459_lut(len(classes)), IGNORE_16BIT
    else:
        classes = read_class_names(os.path.join(CLASS_NAMES_DIR, "pascal_context_59.txt"))
        lut, ignore = lookup_table(pc59_mapping(labels, classes), 65536, 255), 255
    mats = {os.path.splitext(os.path.basename(n))[0]: n for n in src.glob("*trainval/*.mat")}
    voc = src.find_root("ImageSets/Main/val.txt")
    writer = LayoutWriter(out, classes, ignore_label=ignore, overwrite=args.overwrite)
    for split in args.splits.split(","):
        ids = [i for i in src.read(f"{voc}ImageSets/Main/{split}.txt").decode().split()
               if i in mats]
        for stem in progress(ids, split):
            label_map = loadmat(io.BytesIO(src.read(mats[stem])))["LabelMap"]
            writer.add(split, stem, src.read(f"{voc}JPEGImages/{stem}.jpg"), ".jpg",
                       lut[label_map.astype(np.int64)])
    print(writer.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
