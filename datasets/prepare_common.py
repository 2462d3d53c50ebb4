"""Shared pieces of the ``prepare_*.py`` scripts: reading a download (folder, .zip or .tar),
label lookup tables and writing the mmmask user layout.

Output layout (read by ``mmmask.data.register_dataset_root``)::

    OUT/classes.json               {"classes": [[name, synonym, ...], ...], "ignore_label": N, ...}
    OUT/images/<split>/STEM.jpg
    OUT/annotations/<split>/STEM.png   label ids (uint8, or uint16 when there are > 255 classes)
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
import sys
import tarfile
import zipfile
from typing import Iterator

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CLASS_NAMES_DIR = os.path.join(HERE, "class_names")
IGNORE_8BIT, IGNORE_16BIT = 255, 65535


class Source:
    """Files of a download, whether an extracted folder, a .zip or a .tar(.gz): paths are
    relative, with ``/`` separators, as they appear inside the archive."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist (give the downloaded archive or the "
                                    "folder it was extracted to)")
        self.path = path
        self._zip = self._tar = None
        if os.path.isdir(path):
            names = []
            for root, _, files in os.walk(path):
                for f in files:
                    names.append(os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/"))
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        elif tarfile.is_tarfile(path):
            self._tar = tarfile.open(path)
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            names = list(self._members)
        else:
            raise ValueError(f"{path}: not a folder, .zip or .tar archive")
        self.names = sorted(n.removeprefix("./") for n in names)

    def glob(self, pattern: str) -> list[str]:
        """Names matching a shell pattern (``*`` crosses ``/``), sorted."""
        return [n for n in self.names if fnmatch.fnmatch(n, pattern)]

    def find_root(self, marker: str) -> str:
        """The prefix (possibly "") under which ``marker`` (a file or folder path) exists."""
        needle = "/" + marker.strip("/") + "/"
        for n in self.names:
            at = ("/" + n + "/").find(needle)
            if at >= 0:
                return n[:at]
        raise FileNotFoundError(f"{self.path}: no {marker!r} inside; is this the right download?")

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        if self._tar is not None:
            member = self._members.get(name) or self._members.get("./" + name)
            return self._tar.extractfile(member).read()
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read()

    def image_array(self, name: str) -> np.ndarray:
        with Image.open(io.BytesIO(self.read(name))) as im:
            return np.asarray(im)


def read_class_names(path: str) -> list[list[str]]:
    """One class per line, synonyms split by ``,`` (optionally ``id:`` first), as in openseg."""
    from mmmask.data.vocab import read_vocab_file

    return [list(c) for c in read_vocab_file(path).classes]


def read_id_class_names(path: str) -> list[tuple[int, list[str]]]:
    """``id: name, synonym`` lines -> [(id, [name, synonym, ...])] (ids of the source data)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            head, sep, rest = line.partition(":")
            if not sep or not head.strip().isdigit():
                raise ValueError(f"{path}:{n}: expected 'id: name, synonym', got {line!r}")
            out.append((int(head), [s.strip() for s in rest.split(",") if s.strip()]))
    return out


def lookup_table(mapping: dict[int, int], size: int, ignore: int) -> np.ndarray:
    """Array ``lut`` with ``lut[source_id] = target_id`` and ``ignore`` elsewhere."""
    dtype = np.uint8 if ignore <= 255 else np.uint16
    lut = np.full(size, ignore, dtype=dtype)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


class LayoutWriter:
    """Writes images, label maps and classes.json into the mmmask user layout."""

    def __init__(self, out: str, classes: list[list[str]], *, ignore_label: int = IGNORE_8BIT,
                 thing: list[int] | None = None, overwrite: bool = False):
        if os.path.exists(os.path.join(out, "classes.json")) and not overwrite:
            raise FileExistsError(f"{out} already holds a dataset; pass --overwrite to replace it")
        self.out = out
        self.ignore_label = ignore_label
        self.counts: dict[str, int] = {}
        os.makedirs(out, exist_ok=True)
        spec: dict = {"classes": classes, "ignore_label": ignore_label}
        if thing is not None:
            spec["thing"] = thing
            spec["stuff"] = [i for i in range(len(classes)) if i not in set(thing)]
        with open(os.path.join(out, "classes.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=0, ensure_ascii=False)

    def add(self, split: str, stem: str, image_bytes: bytes, ext: str, labels: np.ndarray) -> None:
        img_dir = os.path.join(self.out, "images", split)
        ann_dir = os.path.join(self.out, "annotations", split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        with open(os.path.join(img_dir, stem + ext.lower()), "wb") as f:
            f.write(image_bytes)
        mode_dtype = np.uint8 if self.ignore_label <= 255 else np.uint16
        Image.fromarray(np.ascontiguousarray(labels.astype(mode_dtype))).save(
            os.path.join(ann_dir, stem + ".png"))
        self.counts[split] = self.counts.get(split, 0) + 1

    def report(self) -> str:
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(self.counts.items()))
        return f"wrote {self.out} ({parts or 'no images'})"


def link_or_copy(src: str, dst: str, copy: bool = False) -> None:
    """Symlink ``src`` at ``dst`` (or copy it); an existing ``dst`` is replaced."""
    if os.path.lexists(dst):
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        else:
            os.remove(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if copy:
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
    else:
        os.symlink(os.path.abspath(src), dst)


def default_out(name: str) -> str:
    return os.path.join(os.environ.get("MMMASK_DATASETS", "datasets"), name)


def progress(items: list, label: str) -> Iterator:
    for i, item in enumerate(items):
        if i % 500 == 0:
            print(f"{label}: {i}/{len(items)}", file=sys.stderr, flush=True)
        yield item


def stem_of(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]
