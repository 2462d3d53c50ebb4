"""Vocabularies: the ``"person|people,car,grass|lawn"`` syntax shared by the CLI and the demo.

A vocabulary is a list of classes; each class is a list of synonyms whose first entry is the
display label. Text embeddings take the max over synonyms.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field

__all__ = ["Vocabulary", "parse_vocab", "read_vocab_file", "MAX_NAME_CHARS", "MAX_CLASSES"]

# Class names longer than this are refused (CLIP's context window truncates long prompts anyway).
MAX_NAME_CHARS = 200
# More classes than this in one vocabulary are refused.
MAX_CLASSES = 10000


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    return " ".join(name.split())  # trim and collapse whitespace


@dataclass(frozen=True)
class Vocabulary:
    """Classes with synonyms. ``classes[i][0]`` is the label shown for class ``i``.

    ``seen`` optionally marks the classes seen in training (for the in/out-vocabulary ensemble
    and for seen/unseen metrics); ``None`` means unknown.
    """

    classes: tuple[tuple[str, ...], ...]
    seen: tuple[bool, ...] | None = field(default=None)

    def __post_init__(self):
        if not self.classes:
            raise ValueError("The vocabulary is empty: give at least one class name.")
        if len(self.classes) > MAX_CLASSES:
            raise ValueError(f"The vocabulary has {len(self.classes)} classes; at most {MAX_CLASSES}.")
        seen_labels: dict[str, int] = {}
        for i, syns in enumerate(self.classes):
            if not syns or not all(syns):
                raise ValueError(f"Class {i} of the vocabulary has an empty name.")
            for s in syns:
                if len(s) > MAX_NAME_CHARS:
                    raise ValueError(
                        f"Class name {s[:40]!r}... is {len(s)} characters; at most {MAX_NAME_CHARS}."
                    )
            key = syns[0].lower()
            if key in seen_labels:
                raise ValueError(
                    f"Duplicate class {syns[0]!r} in the vocabulary (classes {seen_labels[key]} and {i})."
                )
            seen_labels[key] = i
        if self.seen is not None and len(self.seen) != len(self.classes):
            raise ValueError("Vocabulary.seen must have one flag per class.")

    @property
    def labels(self) -> list[str]:
        """Display labels (first synonym of each class)."""
        return [c[0] for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def key(self) -> tuple:
        """Hashable identity used by text-embedding caches."""
        return self.classes

    def to_string(self) -> str:
        """Back to the ``a|b,c`` syntax."""
        return ",".join("|".join(c) for c in self.classes)

    @classmethod
    def from_names(cls, names, seen=None) -> "Vocabulary":
        """From a list whose entries are a name or a list of synonyms (``classes.json`` style)."""
        classes = []
        for n in names:
            syns = [n] if isinstance(n, str) else list(n)
            syns = [_clean(str(s)) for s in syns]
            classes.append(tuple(s for s in syns if s))
        return cls(tuple(classes), None if seen is None else tuple(bool(s) for s in seen))


def parse_vocab(text: str) -> Vocabulary:
    """Parse ``"person|people,car,grass|lawn"``: classes split by ``,``, synonyms by ``|``."""
    if text is None or not str(text).strip():
        raise ValueError("The vocabulary is empty: give classes like 'person|people,car,grass'.")
    classes = []
    for part in str(text).split(","):
        syns = tuple(s for s in (_clean(x) for x in part.split("|")) if s)
        if syns:
            classes.append(syns)
    if not classes:
        raise ValueError("The vocabulary is empty: give classes like 'person|people,car,grass'.")
    return Vocabulary(tuple(classes))


def read_vocab_file(path: str) -> Vocabulary:
    """One class per line, synonyms split by ``,``, optionally ``id:`` first (openseg files)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Vocabulary file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"Vocabulary file {path} is not UTF-8 text.") from None
    classes = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, sep, rest = line.partition(":")
        if sep and head.strip().isdigit():
            line = rest
        syns = tuple(s for s in (_clean(x) for x in line.split(",")) if s)
        if syns:
            classes.append(syns)
    if not classes:
        raise ValueError(f"Vocabulary file {path} lists no classes.")
    return Vocabulary(tuple(classes))
