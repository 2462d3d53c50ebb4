"""Configs: ``get_cfg()`` defaults, YAML ``_BASE_`` inheritance and ``KEY VALUE`` overrides."""

from .config import CfgNode, ConfigError, all_keys, configurable, get_cfg, load_cfg

__all__ = ["CfgNode", "ConfigError", "all_keys", "configurable", "get_cfg", "load_cfg"]
