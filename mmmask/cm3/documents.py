"""HTML-like image-caption documents and the CM3 prompts built from them.

One training document (CM3 paper: the image sits in the ``src`` of an ``<img>`` tag, the caption
in its ``alt``; markup is plain bytes)::

    <bos> <img alt="CAPTION" src="  [h*w image-code tokens, row-major]  ">

Prompts, all from the same layout (tasks by prompt alone):

- text-to-image: ``<bos><img alt="CAPTION" src="`` then ``h*w`` image codes are sampled;
- captioning (infilling the alt): ``<bos><img alt="<mask:0>" src="IMAGE"><mask:0>`` then text
  until ``<eos>`` (or a sentinel);
- image / text infilling: the document with spans replaced by ``<mask:i>``, then ``<mask:0>``.

Quotes and ampersands in captions are escaped (``&quot;``, ``&amp;``) so the markup stays parseable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .masking import apply_spans
from .tokenizer import Vocab

__all__ = [
    "ALT_OPEN", "SRC_OPEN", "TAG_CLOSE", "Document", "escape_caption", "unescape_caption",
    "build_document", "parse_document", "text_to_image_prompt", "masked_prompt",
    "caption_prompt", "max_caption_bytes", "truncate_caption",
]

ALT_OPEN = '<img alt="'
SRC_OPEN = '" src="'
TAG_CLOSE = '">'


@dataclass
class Document:
    """Token ids of one document and where its parts lie (``[start, end)`` in ``ids``)."""

    ids: list[int]
    caption_span: tuple[int, int]
    image_span: tuple[int, int]


def escape_caption(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;")


def unescape_caption(text: str) -> str:
    return text.replace("&quot;", '"').replace("&amp;", "&")


def build_document(vocab: Vocab, caption: str, codes: torch.Tensor | Sequence[int]) -> Document:
    """``<bos><img alt="CAPTION" src="CODES">`` for VQ ``codes`` (any shape, row-major)."""
    cap = vocab.encode_text(escape_caption(caption))
    img = vocab.image_to_ids(codes)
    ids = [vocab.bos_id] + vocab.encode_text(ALT_OPEN)
    cap_start = len(ids)
    ids += cap
    ids += vocab.encode_text(SRC_OPEN)
    img_start = len(ids)
    ids += img
    ids += vocab.encode_text(TAG_CLOSE)
    return Document(ids=ids, caption_span=(cap_start, cap_start + len(cap)),
                    image_span=(img_start, img_start + len(img)))


def parse_document(vocab: Vocab, ids: Sequence[int]) -> tuple[str, list[int]]:
    """``(caption, image codes)`` of a document's ids; ``ValueError`` if the markup is broken."""
    ids = [int(i) for i in ids]
    if ids and ids[0] == vocab.bos_id:
        ids = ids[1:]
    alt, src = vocab.encode_text(ALT_OPEN), vocab.encode_text(SRC_OPEN)
    if ids[: len(alt)] != alt:
        raise ValueError(f"Document does not start with {ALT_OPEN!r}: {vocab.render(ids[:20])}")
    rest = ids[len(alt):]
    for p in range(len(rest) - len(src) + 1):
        if rest[p: p + len(src)] == src:
            break
    else:
        raise ValueError(f"Document has no {SRC_OPEN!r}")
    caption = unescape_caption(vocab.decode_text(rest[:p]))
    codes = []
    for t in rest[p + len(src):]:
        if not vocab.is_image(t):
            break
        codes.append(t - vocab.image_offset)
    return caption, codes


def text_to_image_prompt(vocab: Vocab, caption: str) -> list[int]:
    """``<bos><img alt="CAPTION" src="``: the model continues with the image codes."""
    return ([vocab.bos_id] + vocab.encode_text(ALT_OPEN + escape_caption(caption))
            + vocab.encode_text(SRC_OPEN))


def masked_prompt(vocab: Vocab, doc_ids: Sequence[int], spans: Sequence[tuple[int, int]]
                  ) -> list[int]:
    """The document with ``spans`` replaced by sentinels, followed by ``<mask:0>``.

    The model then generates span 0; callers force ``<mask:i>`` before span ``i``.
    """
    if not spans:
        raise ValueError("masked_prompt needs at least one span")
    ids, _ = apply_spans(list(doc_ids), list(spans), sentinel_ids=vocab.sentinel_ids,
                         eos_id=vocab.eos_id)
    head_len = len(doc_ids) - sum(e - s for s, e in spans) + len(spans)
    return ids[:head_len] + [vocab.sentinel(0)]


def caption_prompt(vocab: Vocab, codes: torch.Tensor | Sequence[int]) -> list[int]:
    """``<bos><img alt="<mask:0>" src="IMAGE"><mask:0>``: the model continues with the caption."""
    doc = build_document(vocab, "", codes)
    s = doc.caption_span[0]
    # an empty alt cannot be masked as a span; insert the sentinel where the caption goes
    return doc.ids[:s] + [vocab.sentinel(0)] + doc.ids[s:] + [vocab.sentinel(0)]


def max_caption_bytes(block_size: int, num_image_tokens: int, max_spans: int) -> int:
    """Longest caption (bytes, escaped) whose masked document fits ``block_size + 1`` tokens."""
    markup = 1 + len((ALT_OPEN + SRC_OPEN + TAG_CLOSE).encode())
    room = block_size + 1 - markup - num_image_tokens - 2 * max_spans - 1
    if room < 1:
        raise ValueError(
            f"BLOCK_SIZE {block_size} leaves no room for a caption next to {num_image_tokens} "
            f"image tokens; raise CM3.BLOCK_SIZE or CM3.VQ.DOWNSAMPLE"
        )
    return room


def truncate_caption(caption: str, max_bytes: int) -> str:
    """``caption`` cut to at most ``max_bytes`` escaped UTF-8 bytes, at a word boundary if any."""
    if len(escape_caption(caption).encode()) <= max_bytes:
        return caption
    words = caption.split(" ")
    out = ""
    for w in words:
        cand = f"{out} {w}" if out else w
        if len(escape_caption(cand).encode()) > max_bytes:
            break
        out = cand
    if not out:  # a single over-long word: cut by characters
        for ch in caption:
            if len(escape_caption(out + ch).encode()) > max_bytes:
                break
            out += ch
    return out
