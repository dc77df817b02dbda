"""No silent config keys: every key of the defaults tree is read, or refused at setup."""
import ast
import functools
import os

import pytest

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import BACKEND, CfgNode, get_cfg
from sephnet.config.unsupported_keys import REFUSED_KEYS, refused_key_errors

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
TABLE = "sephnet/config/unsupported_keys.py"
# files that define keys (their assignments are not reads) or name them in the table
NOT_READERS = {"sephnet/d2/config/defaults.py", TABLE}
# keys read under a name the scan cannot see (built from strings at run time), and where
SCAN_BLIND = {
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": "sephnet/d2/data/dataset_mapper.py",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": "sephnet/d2/data/dataset_mapper.py",
}


def _defaults():
    cfg = get_cfg()
    add_sephnet_config(cfg)
    return cfg


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, CfgNode):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _refused(key):
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in REFUSED_KEYS)


def _source_files():
    yield os.path.join(ROOT, "train_net.py")
    for folder, _, files in os.walk(os.path.join(ROOT, "sephnet")):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.relpath(path, ROOT) not in NOT_READERS:
                yield path


def _reads_in(tree):
    """(parent, leaf) pairs read in a module: ``<...>.PARENT.LEAF`` loads, ``alias.LEAF`` where
    ``alias = <...>.PARENT`` in the same function, ``cfg.LEAF`` (parent ""), and, with parent
    None (any): ``x_cfg.LEAF`` where ``x_cfg`` is a function's parameter (a node passed in),
    ``node["LEAF"]``, ``node.get("LEAF")`` and ``getattr(node, "LEAF")``."""
    pairs = set()
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef))]
    for scope in scopes:
        aliases = {}
        if isinstance(scope, ast.FunctionDef):
            aliases.update({a.arg: {None} for a in scope.args.args if a.arg.endswith("_cfg")})
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                both_tuples = isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                for t, v in zip(target.elts, value.elts) if both_tuples else [(target, value)]:
                    if isinstance(t, ast.Name) and isinstance(v, ast.Attribute):
                        aliases.setdefault(t.id, set()).add(v.attr)
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                if isinstance(node.value, ast.Attribute):
                    pairs.add((node.value.attr, node.attr))
                elif isinstance(node.value, ast.Name):
                    pairs.update((parent, node.attr) for parent in aliases.get(node.value.id, ()))
                    if node.value.id == "cfg":
                        pairs.add(("", node.attr))
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                pairs.add((None, node.slice.value))
            elif isinstance(node, ast.Call) and node.args:
                if getattr(node.func, "id", None) == "getattr" and len(node.args) > 1:
                    key = node.args[1]
                elif getattr(node.func, "attr", None) == "get":
                    key = node.args[0]
                else:
                    continue
                if isinstance(key, ast.Constant):
                    pairs.add((None, key.value))
    return pairs


@functools.lru_cache(maxsize=None)
def _read_keys():
    pairs = set()
    for path in _source_files():
        with open(path) as f:
            pairs |= _reads_in(ast.parse(f.read(), path))
    keys = set()
    for key, _ in _leaves(_defaults()):
        parent, _, leaf = key.rpartition(".")
        if (parent.rpartition(".")[2], leaf) in pairs or (None, leaf) in pairs or key in SCAN_BLIND:
            keys.add(key)
    return keys


@pytest.mark.skipif(BACKEND != "core", reason="scans the core's source: detectron2 reads its own keys")
def test_every_default_key_is_read_or_refused():
    read = _read_keys()
    silent = [k for k, _ in _leaves(_defaults()) if k not in read and not _refused(k)]
    assert not silent, (
        f"These config keys are in the defaults tree but no code reads them: {silent}. "
        "A key must act or be refused: read it where the feature is built (e.g. the component's "
        f"from_config), or, if the feature is not implemented, add a line for it to REFUSED_KEYS "
        f"in {TABLE} (key, backends, what to use instead)."
    )


@pytest.mark.skipif(BACKEND != "core", reason="scans the core's source: detectron2 reads its own keys")
def test_no_refused_entry_is_read():
    """An entry whose keys are all read is stale (a node entry may cover a key that is read
    on the way to an error, e.g. a keypoint filter that only runs with keypoints on)."""
    read = _read_keys()
    keys = [k for k, _ in _leaves(_defaults())]
    stale = []
    for pattern in REFUSED_KEYS:
        covered = [k for k in keys if k == pattern or (pattern.endswith(".*") and k.startswith(pattern[:-1]))]
        if covered and all(k in read for k in covered):
            stale.append(pattern)
    assert not stale, (
        f"These entries of REFUSED_KEYS in {TABLE} name keys that code now reads: {stale}. "
        "If the feature is implemented, delete the entries from the table."
    )


def test_read_scan_sees_reads_through_aliases():
    tree = ast.parse(
        "def f(cfg):\n"
        "    node, other = cfg.MODEL.SEPH.ROI_HOOK, cfg.X\n"
        "    cfg.MODEL.RPN.NMS_THRESH = 1\n"
        "    return node.VERSION, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.OUTPUT_DIR, d['TOPK']\n"
        "def g(clip_cfg):\n"
        "    return clip_cfg.CLIP_VALUE, 'NAME', cfg.get('SEED')\n"
    )
    pairs = _reads_in(tree)
    assert {("ROI_HOOK", "VERSION"), ("ROI_HEADS", "NUM_CLASSES"), ("", "OUTPUT_DIR"), (None, "TOPK"),
            (None, "CLIP_VALUE"), (None, "SEED")} <= pairs
    assert ("RPN", "NMS_THRESH") not in pairs  # an assignment is not a read
    assert (None, "NAME") not in pairs  # nor is a string that is not used as a key


def test_every_table_entry_names_keys_of_the_defaults_tree():
    keys = [k for k, _ in _leaves(_defaults())]
    for pattern in REFUSED_KEYS:
        assert any(k == pattern or (pattern.endswith(".*") and k.startswith(pattern[:-1])) for k in keys), pattern


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [value[-1] if value else 1])
    raise TypeError(value)


REFUSED_LEAVES = sorted(k for k, _ in _leaves(_defaults()) if _refused(k))


@pytest.mark.parametrize("key", REFUSED_LEAVES)
def test_a_refused_key_set_to_a_non_default_value_is_an_error_naming_it(key):
    defaults = _defaults()
    cfg = defaults.clone()
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = _other_value(node[leaf])
    backends = REFUSED_KEYS[next(p for p in REFUSED_KEYS if key == p or key.startswith(p.rstrip("*")))][0]
    for backend in ("core", "detectron2"):
        errors = list(refused_key_errors(cfg, defaults, backend))
        if backend in backends:
            assert len(errors) == 1 and errors[0].startswith(f"{key}=") and "not supported" in errors[0]
        else:
            assert errors == []
    assert list(refused_key_errors(defaults, defaults, "core")) == []


def test_default_written_with_other_sequence_types_is_not_refused():
    defaults = _defaults()
    cfg = _defaults()
    # the default [[-90, 0, 90]] with a tuple inside, as a yaml/CLI round trip may give it
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.ANGLES", [(-90, 0, 90)]])
    assert list(refused_key_errors(cfg, defaults, "core")) == []
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.ANGLES", [(-90, 0, 45)]])
    assert len(list(refused_key_errors(cfg, defaults, "core"))) == 1


def test_test_aug_enabled_is_accepted_now_that_tta_runs():
    cfg = _defaults()
    cfg.merge_from_list(["TEST.AUG.ENABLED", True])
    validate_sephnet_config(cfg)
    assert cfg.TEST.AUG.ENABLED
