"""CfgNode file merging (_BASE_ chains, versions, errors) and the @configurable decorator."""

import os
import textwrap

import pytest
import yaml

from sephnet.d2.config import CfgNode, configurable, get_cfg, global_cfg, set_global_cfg


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_base_chain_two_hops_relative_paths_leaf_wins(tmp_path):
    root = _write(
        str(tmp_path / "Base-Root.yaml"),
        """
        MODEL:
          MASK_ON: True
          RESNETS:
            DEPTH: 101
        SOLVER:
          BASE_LR: 0.5
          STEPS: (10, 20)
        VERSION: 2
        """,
    )
    mid = _write(
        str(tmp_path / "topic" / "Base-Mid.yaml"),
        """
        _BASE_: "../Base-Root.yaml"
        SOLVER:
          BASE_LR: 0.25
          MAX_ITER: 77
        """,
    )
    leaf = _write(
        str(tmp_path / "topic" / "leaves" / "leaf.yaml"),
        """
        _BASE_: "../Base-Mid.yaml"
        SOLVER:
          MAX_ITER: 99
        MODEL:
          ROI_HEADS:
            NUM_CLASSES: 3
        """,
    )
    assert os.path.isfile(root) and os.path.isfile(mid)
    cfg = get_cfg()
    cfg.merge_from_file(leaf)
    assert cfg.MODEL.MASK_ON is True  # from the root, two hops up
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.SOLVER.BASE_LR == 0.25  # the middle file overrides the root
    assert cfg.SOLVER.MAX_ITER == 99  # the leaf overrides the middle file
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"  # untouched defaults stay
    assert "_BASE_" not in cfg


def test_base_list_merges_in_order(tmp_path):
    _write(str(tmp_path / "a.yaml"), "SOLVER:\n  BASE_LR: 1.0\n  MAX_ITER: 5\n")
    _write(str(tmp_path / "b.yaml"), "SOLVER:\n  BASE_LR: 2.0\n")
    leaf = _write(str(tmp_path / "leaf.yaml"), "_BASE_: [a.yaml, b.yaml]\n")
    cfg = get_cfg()
    cfg.merge_from_file(leaf)
    assert cfg.SOLVER.BASE_LR == 2.0
    assert cfg.SOLVER.MAX_ITER == 5


def test_unknown_key_in_file_raises_key_error(tmp_path):
    path = _write(str(tmp_path / "bad.yaml"), "MODEL:\n  ROI_HEADS:\n    NUM_CLASSSES: 3\n")
    with pytest.raises(KeyError, match="NUM_CLASSSES"):
        get_cfg().merge_from_file(path)


def test_unknown_key_in_merge_from_list_raises_key_error():
    cfg = get_cfg()
    with pytest.raises(KeyError, match="SOLVER.BASE_LRR"):
        cfg.merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(AssertionError):  # what yacs (and so detectron2) raises
        cfg.merge_from_list(["NOPE.X", "1"])
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.1", "MODEL.PIXEL_STD", "[57.0, 57.0, 57.0]"])
    assert cfg.SOLVER.BASE_LR == 0.1
    assert cfg.MODEL.PIXEL_STD == [57.0, 57.0, 57.0]


def test_type_mismatch_raises_value_error(tmp_path):
    cfg = get_cfg()
    with pytest.raises(ValueError, match="MAX_ITER"):
        cfg.merge_from_list(["SOLVER.MAX_ITER", "'many'"])
    path = _write(str(tmp_path / "bad_type.yaml"), "MODEL:\n  MASK_ON: [1, 2]\n")
    with pytest.raises(ValueError):
        get_cfg().merge_from_file(path)


def test_old_version_is_rejected_with_a_clear_error(tmp_path):
    path = _write(str(tmp_path / "v1.yaml"), "VERSION: 1\nSOLVER:\n  BASE_LR: 0.1\n")
    with pytest.raises(ValueError, match="VERSION=1"):
        get_cfg().merge_from_file(path)


def test_missing_file_raises():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg().merge_from_file("/nonexistent/nope.yaml")


def test_get_cfg_returns_independent_copies_and_dump_round_trips(tmp_path):
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR == 0.001
    path = tmp_path / "dumped.yaml"
    path.write_text(a.dump())
    c = get_cfg()
    c.merge_from_file(str(path))
    # yaml has no tuples: compare through the dump, as a second round trip would
    assert yaml.safe_load(c.dump()) == yaml.safe_load(a.dump())
    assert c.SOLVER.BASE_LR == 123.0


def test_frozen_config_refuses_changes():
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0


def test_set_global_cfg_keeps_the_same_object():
    before = global_cfg
    cfg = CfgNode({"KEY": 3})
    set_global_cfg(cfg)
    from sephnet.d2.config import global_cfg as after

    assert after is before
    assert after.KEY == 3


# ----- @configurable -------------------------------------------------------------------


class _Head:
    @configurable
    def __init__(self, in_dim, num_classes=80, *, scale=1.0):
        self.in_dim, self.num_classes, self.scale = in_dim, num_classes, scale

    @classmethod
    def from_config(cls, cfg, in_dim):
        return {"in_dim": in_dim, "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}


def test_configurable_class_explicit_and_cfg_calls():
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 7
    explicit = _Head(4, num_classes=2, scale=0.5)
    assert (explicit.in_dim, explicit.num_classes, explicit.scale) == (4, 2, 0.5)
    from_cfg = _Head(cfg, 8)
    assert (from_cfg.in_dim, from_cfg.num_classes, from_cfg.scale) == (8, 7, 1.0)
    as_keyword = _Head(cfg=cfg, in_dim=9)
    assert (as_keyword.in_dim, as_keyword.num_classes) == (9, 7)


def test_configurable_extra_kwargs_override_from_config():
    cfg = get_cfg()
    obj = _Head(cfg, in_dim=3, num_classes=5, scale=2.0)  # num_classes/scale unknown to from_config
    assert (obj.in_dim, obj.num_classes, obj.scale) == (3, 5, 2.0)


def test_configurable_from_config_with_var_kwargs_receives_everything():
    seen = {}

    class Wide:
        @configurable
        def __init__(self, a, b=0):
            self.a, self.b = a, b

        @classmethod
        def from_config(cls, cfg, **kwargs):
            seen.update(kwargs)
            return {"a": cfg.SOLVER.MAX_ITER, "b": kwargs.get("b", -1)}

    obj = Wide(get_cfg(), b=4)
    assert (obj.a, obj.b) == (40000, 4)
    assert seen == {"b": 4}


def test_configurable_function_convention():
    @configurable(from_config=lambda cfg, k=1: {"lr": cfg.SOLVER.BASE_LR * k})
    def make(lr, momentum=0.9):
        return lr, momentum

    cfg = get_cfg()
    assert make(0.5) == (0.5, 0.9)
    assert make(cfg) == (0.001, 0.9)
    assert make(cfg, k=10, momentum=0.0) == (0.01, 0.0)
    assert make.from_config is not None


def test_configurable_bad_from_config_signature_is_a_type_error():
    class Bad:
        @configurable
        def __init__(self, a=1):
            self.a = a

        @classmethod
        def from_config(cls, config):
            return {"a": 2}

    assert Bad(a=3).a == 3  # explicit calls never touch from_config
    with pytest.raises(TypeError, match="'cfg' as the first argument"):
        Bad(get_cfg())


def test_configurable_needs_a_classmethod_from_config():
    class NoFromConfig:
        @configurable
        def __init__(self, a=1):
            self.a = a

    with pytest.raises(AttributeError, match="from_config"):
        NoFromConfig(get_cfg())

    class StaticFromConfig:
        @configurable
        def __init__(self, a=1):
            self.a = a

        @staticmethod
        def from_config(cfg):
            return {"a": 1}

    with pytest.raises(TypeError, match="classmethod"):
        StaticFromConfig(get_cfg())


def test_configurable_misuse_on_a_plain_function():
    with pytest.raises(TypeError, match="Incorrect use"):

        @configurable
        def not_init(x):
            return x


def test_allow_unsafe_controls_python_yaml_tags(tmp_path):
    path = _write(str(tmp_path / "tagged.yaml"), "SOLVER:\n  STEPS: !!python/tuple [5, 7]\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)  # unsafe loading is the default, as in detectron2
    assert cfg.SOLVER.STEPS == (5, 7)
    with pytest.raises(yaml.constructor.ConstructorError):
        get_cfg().merge_from_file(path, allow_unsafe=False)
