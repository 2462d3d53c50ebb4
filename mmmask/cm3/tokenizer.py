"""The CM3 vocabulary: UTF-8 bytes, a few special tokens, sentinels and VQ image codes.

Layout of the id space (all offsets are properties of :class:`Vocab`)::

    [0 .. 255]                      text: one token per UTF-8 byte (any string, no OOV)
    [256] <pad>  [257] <bos>  [258] <eos>
    [259 .. 259+S-1]                <mask:0> .. <mask:S-1>  (CM3 sentinels, S = num_sentinels)
    [259+S .. 259+S+K-1]            image codes 0 .. K-1 of the VQ tokenizer (K = num_image_codes)

Byte-level text keeps the vocabulary small (text + specials + codes = 256 + 3 + 8 + 256 = 523
with the defaults) and makes every string, including non-ASCII text, round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

__all__ = ["Vocab", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
_NUM_BYTES = 256


@dataclass(frozen=True)
class Vocab:
    """Id layout of a CM3 model: bytes, specials, ``num_sentinels`` sentinels, image codes."""

    num_image_codes: int = 256
    num_sentinels: int = 8

    def __post_init__(self) -> None:
        if self.num_image_codes < 1 or self.num_sentinels < 1:
            raise ValueError(
                f"Vocab needs at least one image code and one sentinel; got "
                f"num_image_codes={self.num_image_codes}, num_sentinels={self.num_sentinels}"
            )

    # ---- offsets -------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return _NUM_BYTES

    @property
    def bos_id(self) -> int:
        return _NUM_BYTES + 1

    @property
    def eos_id(self) -> int:
        return _NUM_BYTES + 2

    @property
    def sentinel_offset(self) -> int:
        return _NUM_BYTES + len(SPECIAL_TOKENS)

    @property
    def image_offset(self) -> int:
        return self.sentinel_offset + self.num_sentinels

    @property
    def size(self) -> int:
        """Total number of token ids (the model's ``vocab_size``)."""
        return self.image_offset + self.num_image_codes

    def sentinel(self, i: int) -> int:
        """Id of ``<mask:i>``."""
        if not 0 <= i < self.num_sentinels:
            raise ValueError(f"Sentinel index {i} out of range [0, {self.num_sentinels})")
        return self.sentinel_offset + i

    @property
    def sentinel_ids(self) -> list[int]:
        return [self.sentinel_offset + i for i in range(self.num_sentinels)]

    # ---- text ----------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as ids (0..255)."""
        return list(text.encode("utf-8"))

    def decode_text(self, ids: Iterable[int]) -> str:
        """The text of the byte ids in ``ids``; non-byte ids are skipped, bad UTF-8 replaced."""
        return bytes(int(i) for i in ids if 0 <= int(i) < _NUM_BYTES).decode(
            "utf-8", errors="replace"
        )

    # ---- images --------------------------------------------------------------------------
    def image_to_ids(self, codes: torch.Tensor | Sequence[int]) -> list[int]:
        """VQ codes (any shape, row-major) -> token ids."""
        flat = torch.as_tensor(codes).reshape(-1).tolist()
        bad = [c for c in flat if not 0 <= c < self.num_image_codes]
        if bad:
            raise ValueError(f"Image codes must lie in [0, {self.num_image_codes}); got {bad[:5]}")
        return [self.image_offset + c for c in flat]

    def ids_to_image(self, ids: Sequence[int]) -> list[int]:
        """Token ids of image codes -> VQ codes; any other id raises ``ValueError``."""
        out = [int(i) - self.image_offset for i in ids]
        bad = [i for i, c in zip(ids, out) if not 0 <= c < self.num_image_codes]
        if bad:
            raise ValueError(f"Not image-code ids: {bad[:5]}")
        return out

    # ---- masks over the id space (for constrained sampling) --------------------------------
    def text_mask(self) -> torch.Tensor:
        """bool Tensor[size]: True on byte ids."""
        m = torch.zeros(self.size, dtype=torch.bool)
        m[:_NUM_BYTES] = True
        return m

    def image_mask(self) -> torch.Tensor:
        """bool Tensor[size]: True on image-code ids."""
        m = torch.zeros(self.size, dtype=torch.bool)
        m[self.image_offset:] = True
        return m

    def is_image(self, token: int) -> bool:
        return self.image_offset <= int(token) < self.size

    def is_sentinel(self, token: int) -> bool:
        return self.sentinel_offset <= int(token) < self.image_offset

    def token_name(self, token: int) -> str:
        """Readable name of one id: printable byte, ``<eos>``, ``<mask:2>``, ``<img:17>``."""
        t = int(token)
        if 0 <= t < _NUM_BYTES:
            return chr(t) if 32 <= t < 127 else f"<0x{t:02X}>"
        if t < self.sentinel_offset:
            return SPECIAL_TOKENS[t - _NUM_BYTES]
        if t < self.image_offset:
            return f"<mask:{t - self.sentinel_offset}>"
        if t < self.size:
            return f"<img:{t - self.image_offset}>"
        raise ValueError(f"Token id {t} out of range [0, {self.size})")

    def render(self, ids: Iterable[int]) -> str:
        """A debugging view of a token sequence (bytes shown as text where printable)."""
        return "".join(self.token_name(i) for i in ids)
