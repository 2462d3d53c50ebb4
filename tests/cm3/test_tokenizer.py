import pytest
import torch

from mmmask.cm3.documents import (
    build_document, caption_prompt, masked_prompt, max_caption_bytes, parse_document,
    text_to_image_prompt, truncate_caption,
)
from mmmask.cm3.tokenizer import Vocab

V = Vocab(num_image_codes=256, num_sentinels=8)


def test_layout_and_sizes():
    assert (V.pad_id, V.bos_id, V.eos_id) == (256, 257, 258)
    assert V.sentinel_ids == list(range(259, 267))
    assert V.image_offset == 267 and V.size == 523
    assert V.text_mask().sum() == 256 and V.image_mask().sum() == 256
    assert V.token_name(V.sentinel(2)) == "<mask:2>" and V.token_name(V.image_offset) == "<img:0>"
    with pytest.raises(ValueError):
        V.sentinel(8)
    with pytest.raises(ValueError):
        V.token_name(V.size)


@pytest.mark.parametrize("text", ["a red star", "", "ünïcödé ☃ 星 🙂", 'quote " & amp'])
def test_text_round_trip(text):
    ids = V.encode_text(text)
    assert all(0 <= i < 256 for i in ids)
    assert V.decode_text(ids) == text
    assert V.decode_text(ids + [V.eos_id, V.sentinel(0)]) == text  # non-bytes skipped


def test_image_ids_round_trip():
    codes = torch.randint(0, 256, (8, 8))
    ids = V.image_to_ids(codes)
    assert all(V.is_image(i) for i in ids)
    assert V.ids_to_image(ids) == codes.reshape(-1).tolist()
    with pytest.raises(ValueError):
        V.image_to_ids([256])
    with pytest.raises(ValueError):
        V.ids_to_image([5])


@pytest.mark.parametrize("caption", ["a blue ring in the sky", 'say "hi" & bye', "été ☃"])
def test_document_round_trip(caption):
    codes = torch.randint(0, 256, (4, 4))
    doc = build_document(V, caption, codes)
    assert doc.ids[0] == V.bos_id
    assert V.decode_text(doc.ids[: doc.caption_span[0]]) == '<img alt="'
    assert doc.image_span[1] - doc.image_span[0] == 16
    assert V.decode_text(doc.ids[doc.image_span[1]:]) == '">'
    cap, got = parse_document(V, doc.ids)
    assert cap == caption and got == codes.reshape(-1).tolist()


def test_prompts():
    codes = torch.arange(16)
    t2i = text_to_image_prompt(V, "a red star")
    doc = build_document(V, "a red star", codes)
    assert doc.ids[: len(t2i)] == t2i and len(t2i) == doc.image_span[0]
    cap = caption_prompt(V, codes)
    assert cap.count(V.sentinel(0)) == 2 and cap[-1] == V.sentinel(0)
    assert V.decode_text(cap).startswith('<img alt="" src="')
    # masking the caption span of the captioned document gives the same prompt
    assert masked_prompt(V, doc.ids, [doc.caption_span]) == cap
    s0 = doc.image_span[0]
    p = masked_prompt(V, doc.ids, [(s0 + 2, s0 + 5), (s0 + 9, s0 + 10)])
    assert len(p) == len(doc.ids) - 4 + 2 + 1 and p[-1] == V.sentinel(0)


def test_caption_truncation_fits_block():
    room = max_caption_bytes(256, 64, 3)
    long = "a red star " * 40
    cut = truncate_caption(long, room)
    assert len(cut.encode()) <= room and long.startswith(cut) and not cut.endswith(" ")
    assert truncate_caption("short", room) == "short"
    assert truncate_caption("x" * 500, 10) == "x" * 10
    with pytest.raises(ValueError):
        max_caption_bytes(64, 64, 3)
