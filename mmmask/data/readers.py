"""The user dataset layout, and registering every split of a dataset root in the catalog.

Layout (``--dataset-root DIR``)::

    DIR/classes.json                   list of classes (a name or a list of synonyms), or
                                       {"classes": [...], "stuff": [...], "thing": [...],
                                        "is_thing": [...], "unseen": [...], "ignore_label": 255}
    DIR/images/<split>/*.{jpg,jpeg,png}
    DIR/annotations/<split>/*.png      label ids (255 = ignore), same stem as the image
    DIR/annotations/panoptic_<split>.json + DIR/annotations/panoptic_<split>/  (COCO panoptic)
    DIR/annotations/instances_<split>.json                                     (COCO instances)

Classes named in ``"stuff"``/``"thing"``/``"unseen"`` may be given by any synonym or by index.
Without thing/stuff information every class counts as stuff (a semantic label map cannot
separate instances). A relative root that does not exist is looked up under the directory named
by the ``MMMASK_DATASETS`` environment variable (default ``./datasets``).
"""

from __future__ import annotations

import difflib
import glob
import json
import os
from typing import Any

from PIL import Image

from .catalog import register_dataset
from .image_io import ImageReadError
from .vocab import Vocabulary

__all__ = [
    "IMAGE_EXTENSIONS",
    "datasets_root",
    "resolve_dataset_root",
    "load_classes_json",
    "find_splits",
    "load_user_split",
    "register_dataset_root",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAX_LISTED = 10


def datasets_root() -> str:
    """Directory holding datasets: ``$MMMASK_DATASETS`` or ``./datasets``."""
    return os.environ.get("MMMASK_DATASETS", "datasets")


def resolve_dataset_root(root: str | os.PathLike) -> str:
    """``root`` if it exists, else ``$MMMASK_DATASETS/root``; FileNotFoundError naming both."""
    root = os.fspath(root)
    if os.path.isdir(root):
        return root
    alt = os.path.join(datasets_root(), root)
    if not os.path.isabs(root) and os.path.isdir(alt):
        return alt
    raise FileNotFoundError(
        f"Dataset root {root!r} not found (also looked in {alt!r}; set MMMASK_DATASETS to the "
        f"directory holding your datasets)."
    )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def _class_index(ref: Any, vocab: Vocabulary, key: str, path: str) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool):
        if not 0 <= ref < len(vocab):
            raise ValueError(f"{path}: {key!r} index {ref} out of range 0..{len(vocab) - 1}")
        return ref
    name = " ".join(str(ref).split()).lower()
    for i, syns in enumerate(vocab.classes):
        if name in (s.lower() for s in syns):
            return i
    close = difflib.get_close_matches(str(ref), vocab.labels, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"{path}: {key!r} names unknown class {ref!r}.{hint}")


def _flags(spec: dict, key: str, vocab: Vocabulary, path: str) -> set[int]:
    refs = spec.get(key) or []
    if not isinstance(refs, list):
        raise ValueError(f"{path}: {key!r} must be a list of class names")
    return {_class_index(r, vocab, key, path) for r in refs}


def load_classes_json(path: str) -> dict[str, Any]:
    """Parse ``classes.json`` into catalog metadata (``classes``, ``is_thing``, ``is_seen``...)."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: a dataset root needs classes.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if isinstance(spec, list):
        spec = {"classes": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
        raise ValueError(f"{path}: expected a list of classes or an object with a 'classes' list")
    try:
        vocab = Vocabulary.from_names(spec["classes"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    n = len(vocab)
    things, stuff = _flags(spec, "thing", vocab, path), _flags(spec, "stuff", vocab, path)
    if "is_thing" in spec:
        is_thing = [bool(x) for x in spec["is_thing"]]
        if len(is_thing) != n:
            raise ValueError(f"{path}: 'is_thing' has {len(is_thing)} entries for {n} classes")
    elif things and stuff:
        both = sorted(things & stuff)
        neither = [i for i in range(n) if i not in things | stuff]
        if both or neither:
            bad = [vocab.labels[i] for i in both + neither]
            raise ValueError(
                f"{path}: every class must be in exactly one of 'thing'/'stuff'; check "
                f"{_listing(bad)}"
            )
        is_thing = [i in things for i in range(n)]
    elif things:
        is_thing = [i in things for i in range(n)]
    else:
        is_thing = [i not in stuff for i in range(n)] if stuff else [False] * n
    unseen = _flags(spec, "unseen", vocab, path)
    return {
        "classes": [list(c) for c in vocab.classes],
        "class_names": vocab.labels,
        "is_thing": is_thing,
        "is_seen": [i not in unseen for i in range(n)] if "unseen" in spec else None,
        "ignore_label": int(spec.get("ignore_label", 255)),
    }


def _images_in(folder: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(os.path.join(folder, entry)):
            continue
        if stem in out:
            raise ValueError(f"{folder}: two images share the stem {stem!r}")
        out[stem] = os.path.join(folder, entry)
    return out


def find_splits(root: str) -> list[str]:
    """Splits of the user layout: folders under ``root/images`` that hold images."""
    img_dir = os.path.join(root, "images")
    if not os.path.isdir(img_dir):
        return []
    return sorted(
        d for d in os.listdir(img_dir)
        if os.path.isdir(os.path.join(img_dir, d)) and _images_in(os.path.join(img_dir, d))
    )


def _image_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # header only
            w, h = im.size
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read the image header ({e})") from None
    return h, w


def load_user_split(root: str, split: str, *, allow_unlabeled: bool = False) -> list[dict]:
    """Records of ``root/images/<split>``, each with ``sem_seg_file_name`` (same stem PNG).

    Raises ``ValueError`` listing images that have no annotation (unless ``allow_unlabeled``)
    and annotations that have no image.
    """
    img_dir = os.path.join(root, "images", split)
    ann_dir = os.path.join(root, "annotations", split)
    if not os.path.isdir(img_dir):
        raise FileNotFoundError(f"No image folder {img_dir}; splits found: {find_splits(root)}")
    images = _images_in(img_dir)
    anns: dict[str, str] = {}
    if os.path.isdir(ann_dir):
        anns = {os.path.splitext(f)[0]: os.path.join(ann_dir, f)
                for f in sorted(os.listdir(ann_dir)) if f.lower().endswith(".png")}
    if not allow_unlabeled:
        missing = [os.path.basename(images[s]) for s in images if s not in anns]
        if missing:
            raise ValueError(
                f"{len(missing)} image(s) in {img_dir} have no annotation PNG in {ann_dir}: "
                f"{_listing(missing)}"
            )
    orphans = [os.path.basename(anns[s]) for s in anns if s not in images]
    if orphans:
        raise ValueError(
            f"{len(orphans)} annotation(s) in {ann_dir} have no image in {img_dir}: "
            f"{_listing(orphans)}"
        )
    records = []
    for stem, path in images.items():
        h, w = _image_size(path)
        rec = {"image_id": stem, "file_name": path, "height": h, "width": w}
        if stem in anns:
            rec["sem_seg_file_name"] = anns[stem]
        records.append(rec)
    return records


def _coco_splits(root: str, kind: str) -> list[str]:
    pattern = os.path.join(root, "annotations", f"{kind}_*.json")
    return sorted(os.path.basename(p)[len(kind) + 1:-5] for p in glob.glob(pattern))


def _coco_image_root(root: str, split: str) -> str:
    for cand in (os.path.join(root, "images", split), os.path.join(root, split)):
        if os.path.isdir(cand):
            return cand
    raise FileNotFoundError(
        f"No image folder for COCO split {split!r}: looked for {root}/images/{split} and "
        f"{root}/{split}"
    )


def register_dataset_root(root: str | os.PathLike, name_prefix: str | None = None, *,
                          overwrite: bool = True) -> list[str]:
    """Register every split of a dataset root in the catalog; returns the registered names.

    The user layout registers ``<prefix>_<split>`` (semantic). COCO panoptic and instance files
    register ``<prefix>_<split>_panoptic`` and ``<prefix>_<split>_instances``, and also plain
    ``<prefix>_<split>`` when the user layout has no such split. ``name_prefix`` defaults to the
    root folder's name.
    """
    from .coco import load_coco_instances, load_coco_panoptic

    root = resolve_dataset_root(root)
    prefix = name_prefix or os.path.basename(os.path.normpath(os.path.abspath(root)))
    names: list[str] = []
    user_splits = find_splits(root) if os.path.isfile(os.path.join(root, "classes.json")) else []
    if user_splits:
        meta = load_classes_json(os.path.join(root, "classes.json"))
        for split in user_splits:
            name = f"{prefix}_{split}"
            register_dataset(
                name, lambda s=split: load_user_split(root, s), overwrite=overwrite,
                evaluator_type="sem_seg", dataset_root=root, split=split, **meta,
            )
            names.append(name)
    for kind, suffix in (("panoptic", "_panoptic"), ("instances", "_instances")):
        for split in _coco_splits(root, kind):
            json_file = os.path.join(root, "annotations", f"{kind}_{split}.json")
            image_root = _coco_image_root(root, split)
            if kind == "panoptic":
                png_root = os.path.join(root, "annotations", f"panoptic_{split}")

                def fn(j=json_file, p=png_root, i=image_root):
                    return load_coco_panoptic(j, p, i)[0]
            else:

                def fn(j=json_file, i=image_root):
                    return load_coco_instances(j, i)[0]

            meta = _coco_metadata(kind, json_file, image_root, root, split)
            targets = [f"{prefix}_{split}{suffix}"]
            if f"{prefix}_{split}" not in names:
                targets.append(f"{prefix}_{split}")
            for name in targets:
                register_dataset(name, fn, overwrite=overwrite, dataset_root=root, split=split,
                                 **meta)
                names.append(name)
    if not names:
        raise ValueError(
            f"No dataset found in {root}: expected classes.json + images/<split>/ (+ "
            f"annotations/<split>/), or annotations/panoptic_<split>.json, or "
            f"annotations/instances_<split>.json"
        )
    return names


def _coco_metadata(kind: str, json_file: str, image_root: str, root: str,
                   split: str) -> dict[str, Any]:
    from .coco import coco_categories_metadata, read_coco_categories

    cats = read_coco_categories(json_file)  # the file's records are read when the split loads
    meta = coco_categories_metadata(cats, panoptic=kind == "panoptic")
    meta.update(json_file=json_file, image_root=image_root)
    if kind == "panoptic":
        meta["panoptic_root"] = os.path.join(root, "annotations", f"panoptic_{split}")
    return meta
