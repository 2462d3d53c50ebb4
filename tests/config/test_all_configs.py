"""Every YAML config shipped in configs/ and mmmask/weights/ loads with get_cfg + _BASE_."""

from pathlib import Path

import pytest

from mmmask.config import load_cfg

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml")) + sorted(ROOT.glob("mmmask/weights/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_loads(path):
    cfg = load_cfg(str(path))
    assert cfg.VERSION == 1
