"""Dataset catalog and metadata: datasets are registered by name and loaded lazily.

``DatasetCatalog.register(name, fn)`` stores ``fn``; ``DatasetCatalog.get(name)`` calls it and
returns the records (a list, or a list-like sequence, of dicts; see ``mmmask.data`` for the record
format). ``MetadataCatalog.get(name)`` returns the :class:`Metadata` of a dataset: ``classes``
(list of synonym lists), ``class_names``, ``is_thing``, ``is_seen``, ``ignore_label``,
``evaluator_type`` and whatever else its registration set.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "register_dataset"]


def _unknown(kind: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"{kind} {name!r} is not registered.{hint} "
        f"Registered: {', '.join(names) or '(none)'}"
    )


class _DatasetCatalog:
    """Name -> function returning the records of a dataset (called on every ``get``)."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[[], Sequence[dict]]] = {}

    def register(self, name: str, fn: Callable[[], Sequence[dict]], *,
                 overwrite: bool = False) -> None:
        """Register ``fn`` (no arguments, returns the records) under ``name``."""
        if not callable(fn):
            raise TypeError(f"DatasetCatalog.register({name!r}, fn): fn must be callable")
        if name in self._fns and not overwrite:
            raise ValueError(
                f"Dataset {name!r} is already registered; pass overwrite=True to replace it."
            )
        self._fns[name] = fn

    def get(self, name: str) -> Sequence[dict]:
        """Call the registered function of ``name`` and return its records."""
        if name not in self._fns:
            raise KeyError(_unknown("Dataset", name, self.list()))
        return self._fns[name]()

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._fns)

    def remove(self, name: str) -> None:
        self._fns.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __repr__(self) -> str:
        return f"DatasetCatalog({', '.join(self.list())})"


class Metadata:
    """Attribute bag of one dataset. Unknown attributes raise ``AttributeError`` naming it.

    Setting an attribute that already holds a different value is an error (it catches two
    registrations that disagree); :meth:`set` with ``overwrite=True`` replaces values.
    """

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_data", {})

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        data = object.__getattribute__(self, "_data")
        if key in data:
            return data[key]
        known = sorted(data)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AttributeError(
            f"Metadata of dataset {self.name!r} has no attribute {key!r}.{hint} "
            f"Available: {', '.join(known) or '(none)'}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(**{key: value})

    def set(self, *, overwrite: bool = False, **kwargs: Any) -> "Metadata":
        """Set several attributes; returns ``self``."""
        for k, v in kwargs.items():
            if k == "name":
                raise ValueError("Metadata.name is the dataset name and cannot be set.")
            if not overwrite and k in self._data and self._data[k] != v:
                raise ValueError(
                    f"Metadata {k!r} of dataset {self.name!r} is already set to a different "
                    f"value; pass overwrite=True to replace it."
                )
            self._data[k] = v
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self._data))
        return f"Metadata(name={self.name!r}, keys=[{keys}])"


class _MetadataCatalog:
    """Name -> :class:`Metadata`. ``get`` creates an empty one for a new name."""

    def __init__(self) -> None:
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._meta:
            self._meta[name] = Metadata(name)
        return self._meta[name]

    def list(self) -> list[str]:
        return sorted(self._meta)

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._meta


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def normalize_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Fill the derived keys: ``class_names`` from ``classes``, ``ignore_label`` 255,
    ``is_seen`` None; checks that per-class lists have one entry per class."""
    out = dict(meta)
    if "classes" in out:
        classes = [[c] if isinstance(c, str) else [str(s) for s in c] for c in out["classes"]]
        out["classes"] = classes
        out.setdefault("class_names", [c[0] for c in classes])
        for key in ("class_names", "is_thing", "is_seen"):
            val = out.get(key)
            if val is not None and len(val) != len(classes):
                raise ValueError(
                    f"Metadata {key!r} has {len(val)} entries for {len(classes)} classes."
                )
        out.setdefault("is_seen", None)
    out.setdefault("ignore_label", 255)
    return out


def register_dataset(name: str, fn: Callable[[], Sequence[dict]], *, overwrite: bool = False,
                     **metadata: Any) -> Metadata:
    """Register records function ``fn`` and ``metadata`` under ``name``; returns the metadata.

    With ``overwrite=True`` an earlier registration (records and metadata) is replaced.
    """
    DatasetCatalog.register(name, fn, overwrite=overwrite)
    if overwrite:
        MetadataCatalog.remove(name)
    return MetadataCatalog.get(name).set(**normalize_metadata(metadata))
