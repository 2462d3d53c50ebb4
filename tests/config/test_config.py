import pytest

from mmmask.config import CfgNode, ConfigError, all_keys, configurable, get_cfg, load_cfg


def test_get_cfg_has_version_and_defaults():
    cfg = get_cfg()
    assert isinstance(cfg, CfgNode) and cfg.VERSION >= 1
    assert cfg.SOLVER.IMS_PER_BATCH > 0 and "shapes_ov_train" in cfg.DATASETS.TRAIN
    assert "INPUT.TRAIN_AUGMENTATION" in all_keys(cfg)
    cfg.SOLVER.IMS_PER_BATCH = 3  # a copy: the defaults are untouched
    assert get_cfg().SOLVER.IMS_PER_BATCH != 3


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "SOLVER:\n  IMS_PER_BATCH: 8\n  BASE_LR: 0.5\nINPUT:\n  IMAGE_SIZE: 96\n")
    (tmp_path / "mid.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    (tmp_path / "top.yaml").write_text("_BASE_: mid.yaml\nINPUT:\n  IMAGE_SIZE: 64\n")
    cfg = load_cfg(str(tmp_path / "top.yaml"), ["SOLVER.MAX_ITER", "7"])
    assert cfg.SOLVER.IMS_PER_BATCH == 8  # from base
    assert cfg.SOLVER.BASE_LR == 0.25  # mid overrides base
    assert cfg.INPUT.IMAGE_SIZE == 64  # top overrides base
    assert cfg.SOLVER.MAX_ITER == 7  # override list last
    assert cfg.is_frozen()


def test_unknown_key_in_yaml_names_closest(tmp_path):
    (tmp_path / "bad.yaml").write_text("SOLVER:\n  IMS_PER_BATH: 8\n")
    with pytest.raises(ConfigError) as e:
        load_cfg(str(tmp_path / "bad.yaml"))
    msg = str(e.value)
    assert "SOLVER.IMS_PER_BATH" in msg and "SOLVER.IMS_PER_BATCH" in msg and "bad.yaml" in msg
    assert isinstance(e.value, KeyError)
    (tmp_path / "bad2.yaml").write_text("_BASE_: bad.yaml\n")
    with pytest.raises(ConfigError, match="IMS_PER_BATCH"):
        load_cfg(str(tmp_path / "bad2.yaml"))


def test_unknown_key_in_overrides_names_closest():
    with pytest.raises(ConfigError) as e:
        load_cfg(None, ["INPUT.IMAGE_SIZ", "64"])
    assert "INPUT.IMAGE_SIZ" in str(e.value) and "INPUT.IMAGE_SIZE" in str(e.value)
    with pytest.raises(ConfigError, match="Unknown config key"):
        load_cfg(None, ["NOPE.KEY", "1"])


def test_odd_override_list():
    with pytest.raises(ConfigError, match="odd number"):
        load_cfg(None, ["SOLVER.MAX_ITER", "7", "SOLVER.BASE_LR"])


def test_override_types_checked():
    with pytest.raises(ConfigError):
        load_cfg(None, ["SOLVER.MAX_ITER", "'many'"])


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_cfg("/nonexistent/config.yaml")


class _Thing:
    @configurable
    def __init__(self, *, size: int, train: bool = True, extra: int = 0):
        self.size, self.train, self.extra = size, train, extra

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {"size": cfg.INPUT.IMAGE_SIZE, "train": is_train}


def test_configurable_with_and_without_cfg():
    cfg = get_cfg()
    t = _Thing(cfg)
    assert (t.size, t.train, t.extra) == (cfg.INPUT.IMAGE_SIZE, True, 0)
    t = _Thing(cfg, False)  # positional arguments after cfg go to from_config
    assert t.train is False
    t = _Thing(cfg, is_train=False, extra=3)  # from_config keywords too; others override
    assert (t.train, t.extra) == (False, 3)
    t = _Thing(cfg=cfg, size=5)
    assert t.size == 5
    t = _Thing(size=1, train=False)
    assert (t.size, t.train) == (1, False)
