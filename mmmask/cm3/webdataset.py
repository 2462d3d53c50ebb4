"""Image-text pairs from webdataset tar shards (img2dataset / open_clip layout), tarfile only.

A shard is a tar whose members are grouped by *key*: ``KEY.jpg`` (or png/jpeg/webp) plus
``KEY.txt`` (the caption) and/or ``KEY.json`` (``{"caption": ...}`` or ``{"text": ...}``), stored
next to each other. The key of a member is its path up to the first dot of its file name
(``dir/000123.jpg`` -> ``dir/000123``). Shards are read as streams, one sample at a time.

Shard lists accept globs (``shards/*.tar``) and brace ranges (``shards/{00000..00009}.tar``).
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from typing import Iterator, Sequence

import numpy as np

__all__ = ["expand_shards", "iter_tar_samples", "iter_image_text", "list_image_text_records",
           "register_webdataset", "IMAGE_EXTS", "TEXT_EXTS"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths of ``spec``: a path, glob or brace range, or a list of them (order kept)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for s in specs:
        m = _RANGE.search(s)
        if m:
            a, b = m.group(1), m.group(2)
            width = len(a)
            for i in range(int(a), int(b) + 1):
                out.extend(expand_shards(s[: m.start()] + str(i).zfill(width) + s[m.end():]))
        elif any(c in s for c in "*?["):
            out.extend(sorted(glob.glob(os.path.expanduser(s))))
        else:
            out.append(os.path.expanduser(s))
    return out


def _split_key(name: str) -> tuple[str, str]:
    head, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return os.path.join(head, stem) if head else stem, ext.lower()


def iter_tar_samples(shard: str) -> Iterator[tuple[str, dict[str, tuple[str, bytes]]]]:
    """Stream ``(key, {ext: (member_name, bytes)})`` groups of one shard, in tar order."""
    key: str | None = None
    group: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(shard, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = _split_key(member.name)
            if os.path.basename(k).startswith("."):  # hidden files (e.g. ._foo from macOS)
                continue
            if k != key and key is not None and group:
                yield key, group
                group = {}
            key = k
            f = tar.extractfile(member)
            group[ext] = (member.name, f.read() if f is not None else b"")
    if key is not None and group:
        yield key, group


def _caption(group: dict[str, tuple[str, bytes]]) -> str | None:
    if "txt" in group:
        return group["txt"][1].decode("utf-8", errors="replace").strip()
    if "json" in group:
        try:
            meta = json.loads(group["json"][1].decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            return None
        for field in ("caption", "text", "TEXT"):
            if isinstance(meta, dict) and isinstance(meta.get(field), str):
                return meta[field].strip()
    return None


def _image_entry(group: dict[str, tuple[str, bytes]]) -> tuple[str, bytes] | None:
    for ext in IMAGE_EXTS:
        if ext in group:
            return group[ext]
    return None


def _looks_like_image(data: bytes) -> bool:
    """Whether PIL recognises ``data`` from its header (cheap: pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[0] > 0 and im.size[1] > 0
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def iter_image_text(shards: str | Sequence[str], *, decode: bool = True,
                    max_pixels: int | None = None) -> Iterator[dict]:
    """Stream ``{"key", "shard", "image_member", "caption", "image"}`` over the shards.

    ``image`` is an HxWx3 uint8 array when ``decode`` (else the encoded bytes, checked by header
    only). Samples without an image or a caption, or whose image cannot be read, are skipped.
    """
    from ..data.image_io import ImageReadError, read_image

    for shard in expand_shards(shards):
        for key, group in iter_tar_samples(shard):
            img, caption = _image_entry(group), _caption(group)
            if img is None or caption is None:
                continue
            member, data = img
            if decode:
                try:
                    image: np.ndarray | bytes = read_image(data, max_pixels,
                                                           name=f"{shard}:{member}")
                except ImageReadError:
                    continue
            else:
                if not _looks_like_image(data):
                    continue
                image = data
            yield {"key": key, "shard": shard, "image_member": member, "caption": caption,
                   "image": image}


def list_image_text_records(shards: str | Sequence[str], max_samples: int | None = None
                            ) -> list[dict]:
    """Catalog records ``{"image_id", "caption", "webdataset": {"shard", "image"}}`` (no pixels
    kept; ``CM3DocumentMapper`` reads the member when it maps the record)."""
    out = []
    for s in iter_image_text(shards, decode=False):
        out.append({"image_id": s["key"], "caption": s["caption"],
                    "webdataset": {"shard": s["shard"], "image": s["image_member"]}})
        if max_samples is not None and len(out) >= max_samples:
            break
    return out


def register_webdataset(name: str, shards: str | Sequence[str], *,
                        max_samples: int | None = None, overwrite: bool = False) -> None:
    """Register ``name`` in the dataset catalog: the image-text records of ``shards``.

    The shards are listed when the dataset is first requested (``DatasetCatalog.get``).
    """
    from ..data.catalog import register_dataset

    paths = expand_shards(shards)
    if not paths:
        raise ValueError(f"No webdataset shards match {shards!r}")
    register_dataset(name, lambda: list_image_text_records(paths, max_samples),
                     overwrite=overwrite, shards=paths, evaluator_type="cm3")
