"""Config loading: ``get_cfg()``, YAML with ``_BASE_`` inheritance, ``KEY VALUE`` overrides.

Unknown keys are an error naming the closest valid key. ``@configurable`` lets a class be
built either from keyword arguments or from a config (``cls(cfg)``) through ``from_config``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from typing import Any, Callable

from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["CfgNode", "get_cfg", "load_cfg", "configurable", "ConfigError", "all_keys"]


class ConfigError(KeyError):
    """A config file or override names a key that does not exist, or is malformed."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def all_keys(node: "_FvCfgNode", prefix: str = "") -> list[str]:
    """Every leaf key of ``node`` in dotted form (``MODEL.PMP.NUM_QUERIES``)."""
    out = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, _FvCfgNode):
            out.extend(all_keys(v, full + "."))
        else:
            out.append(full)
    return out


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` whose unknown-key errors name the closest valid key."""

    def _closest(self, key: str) -> str:
        keys = all_keys(self)
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        if not close:  # fall back to matching the last component only
            tail = key.rsplit(".", 1)[-1]
            close = [k for k in keys if k.rsplit(".", 1)[-1] == tail][:1]
        return f" Closest valid key: {close[0]}." if close else ""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise FileNotFoundError(f"Config file not found: {cfg_filename}")
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        loaded = type(self)(loaded)
        self._check_keys(loaded, prefix="", source=cfg_filename)
        self.merge_from_other_cfg(loaded)

    def _check_keys(self, other: "_FvCfgNode", prefix: str, source: str) -> None:
        for k, v in other.items():
            full = f"{prefix}{k}"
            node = self
            for part in full.split(".")[:-1]:
                node = node[part]
            if k not in node:
                raise ConfigError(f"Unknown config key {full!r} in {source}.{self._closest(full)}")
            if isinstance(v, _FvCfgNode) and isinstance(node[k], _FvCfgNode):
                self._check_keys(v, full + ".", source)

    def merge_from_list(self, cfg_list: list) -> None:
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must be KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        for key in cfg_list[0::2]:
            node = self
            for part in str(key).split("."):
                if not isinstance(node, _FvCfgNode) or part not in node:
                    raise ConfigError(f"Unknown config key {key!r}.{self._closest(str(key))}")
                node = node[part]
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            try:
                super().merge_from_list([key, value])
            except (ValueError, AssertionError) as e:
                msg = " ".join(str(e).split())
                raise ConfigError(f"Bad override {key} {value!r}: {msg}") from None

    def dump(self, **kwargs: Any) -> str:  # stable key order for config.yaml in OUTPUT_DIR
        return super().dump(sort_keys=True, **kwargs)


def get_cfg() -> CfgNode:
    """A copy of the defaults: every key of mmmask with its default value."""
    from .defaults import _C

    return _C.clone()


def load_cfg(config_file: str | None = None, opts: list | None = None, freeze: bool = True):
    """``get_cfg()``, then merge ``config_file`` (with ``_BASE_``) and ``KEY VALUE`` overrides."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg


def _called_with_cfg(*args, **kwargs) -> bool:
    if args and isinstance(args[0], _FvCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvCfgNode)


def configurable(init_func: Callable) -> Callable:
    """Decorate ``__init__`` so that ``cls(cfg, **overrides)`` calls ``cls.from_config(cfg)``.

    ``from_config(cls, cfg) -> dict`` turns a config into the keyword arguments of ``__init__``;
    keywords passed next to ``cfg`` override what ``from_config`` returned, except positional
    arguments after ``cfg`` and keywords named in ``from_config``'s signature, which are passed
    to ``from_config`` (``Mapper(cfg, is_train)`` with ``from_config(cls, cfg, is_train)``).
    """
    assert inspect.isfunction(init_func) and init_func.__name__ == "__init__"

    @functools.wraps(init_func)
    def wrapped(self, *args, **kwargs):
        if _called_with_cfg(*args, **kwargs):
            from_config = getattr(type(self), "from_config", None)
            if from_config is None:
                raise AttributeError(f"{type(self).__name__} needs a from_config classmethod")
            cfg = args[0] if args else kwargs.pop("cfg")
            # Positional arguments after cfg, and keywords that from_config names, go to it.
            params = inspect.signature(from_config).parameters
            extra = {k: kwargs.pop(k) for k in list(kwargs) if k in params and k != "cfg"}
            explicit = from_config(cfg, *args[1:], **extra)
            explicit.update({k: v for k, v in kwargs.items() if k != "cfg"})
            init_func(self, **explicit)
        else:
            init_func(self, *args, **kwargs)

    return wrapped
