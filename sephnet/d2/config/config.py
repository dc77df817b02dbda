"""The core's ``CfgNode``, ``get_cfg``, the global config and the ``@configurable`` decorator.

``CfgNode`` is fvcore's (itself a yacs ``CfgNode``) with three changes, as in detectron2:
files are opened through the core's ``PathManager``; ``merge_from_file`` allows unsafe
yaml by default; and files carry a ``VERSION`` that must match the defaults' (2). The core
does not convert version-1 configs; it raises ``ValueError`` instead of guessing.

``@configurable`` lets a class be built either from explicit keyword arguments or from a
config (through its ``from_config`` classmethod), and does the same for plain functions.
"""

import difflib
import functools
import inspect
import logging
import re
from typing import Any, Callable, Dict, List, Optional

from fvcore.common.config import CfgNode as _FvcoreCfgNode

from sephnet.d2.utils.file_io import PathManager

__all__ = ["CfgNode", "get_cfg", "global_cfg", "set_global_cfg", "configurable"]


class CfgNode(_FvcoreCfgNode):
    """A yacs/fvcore config node with ``_BASE_`` inheritance and version checking.

    Everything else (``clone``, ``freeze``, ``defrost``, ``is_frozen``,
    ``merge_from_list``, ``merge_from_other_cfg``, ``dump``, attribute access) is fvcore's:
    unknown keys raise ``KeyError`` and a value of the wrong type raises ``ValueError``.

    Warning: with ``allow_unsafe=True`` (the default) a yaml file may run Python code
    through pyyaml tags; only load config files you trust.
    """

    @classmethod
    def _open_cfg(cls, filename: str) -> Any:
        return PathManager.open(filename, "r")

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = True) -> None:
        """Load ``cfg_filename`` (following its ``_BASE_`` chain) and merge it into ``self``.

        ``_BASE_`` paths are relative to the file that names them (absolute paths, ``~`` and
        URLs also work); a leaf's values override its bases'.

        Args:
            cfg_filename: path of the yaml file (any path ``PathManager`` understands).
            allow_unsafe: allow pyyaml tags that construct Python objects.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file's ``VERSION`` differs from this config's, or a value's type
                differs from the existing value's (the message names the file and key).
            KeyError: the file sets a key that this config does not have (the message names
                the file and the closest existing keys; also an ``AssertionError``).
        """
        if not PathManager.isfile(cfg_filename):
            raise FileNotFoundError(f"Config file '{cfg_filename}' not found.")
        loaded = type(self)(self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe))

        from sephnet.d2.config.defaults import _C

        if self.get("VERSION") != _C.VERSION:
            raise ValueError(
                f"merge_from_file needs a config of the latest version (VERSION={_C.VERSION}); "
                f"this one has VERSION={self.get('VERSION')!r}."
            )
        file_version = loaded.get("VERSION", None)
        if file_version is None:
            logging.getLogger(__name__).debug(
                "Config '%s' has no VERSION; treating it as VERSION=%s.",
                cfg_filename,
                _C.VERSION,
            )
        elif file_version != _C.VERSION:
            raise ValueError(
                f"Config file '{cfg_filename}' has VERSION={file_version!r}, but this core only "
                f"reads VERSION={_C.VERSION} configs (it does not convert older formats). "
                "Update the file's keys to the current detectron2 names and set VERSION: "
                f"{_C.VERSION}."
            )
        try:
            self.merge_from_other_cfg(loaded)
        except KeyError as e:
            match = re.search(r"Non-existent config key: (\S+)", str(e.args[0]) if e.args else "")
            if match is None:
                raise
            raise _UnknownConfigKey(
                self._unknown_key_message(match.group(1)) + f" Set in config file '{cfg_filename}'."
            ) from e
        except ValueError as e:
            raise ValueError(f"{e} (in config file '{cfg_filename}')") from e

    def _unknown_key_message(self, full_key: str) -> str:
        """"Non-existent config key: K" plus the closest existing keys (a typo's likely fix)."""
        known: List[str] = []

        def walk(node: Any, prefix: str) -> None:
            for k, v in node.items():
                known.append(prefix + k)
                if isinstance(v, dict):
                    walk(v, prefix + k + ".")

        walk(self, "")
        close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.75)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return f"Non-existent config key: {full_key}.{hint}"

    def merge_from_list(self, cfg_list: List[str]) -> None:
        """Merge ``[key1, value1, key2, value2, ...]`` (e.g. command-line ``opts``).

        Keys are dotted paths (``"SOLVER.BASE_LR"``); values are parsed as Python
        literals when possible, else kept as strings.

        Raises:
            KeyError: a key does not exist in this config (also an ``AssertionError``,
                which yacs raises here).
            ValueError: a value's type does not match the existing value's.
        """
        for full_key in cfg_list[0::2]:
            node: Any = self
            for part in str(full_key).split("."):
                if not isinstance(node, dict) or part not in node:
                    raise _UnknownConfigKey(self._unknown_key_message(str(full_key)))
                node = node[part]
        return super().merge_from_list(cfg_list)

    def dump(self, *args: Any, **kwargs: Any) -> str:
        """Return the config as a yaml string (arguments go to ``yaml.safe_dump``)."""
        return super().dump(*args, **kwargs)


class _UnknownConfigKey(KeyError, AssertionError):
    """A config key given on the command line or in a file does not exist."""


global_cfg = CfgNode()
"""A process-wide config for quick experiments; see :func:`set_global_cfg`."""


def get_cfg() -> CfgNode:
    """Return a fresh, mutable copy of the default config (detectron2 v0.6's defaults)."""
    from sephnet.d2.config.defaults import _C

    return _C.clone()


def set_global_cfg(cfg: CfgNode) -> None:
    """Make :data:`global_cfg` hold the contents of ``cfg``.

    The object :data:`global_cfg` stays the same (it is cleared and refilled), so modules
    that imported it see the new values.
    """
    global_cfg.clear()
    global_cfg.update(cfg)


def _is_config(obj: Any) -> bool:
    """Whether ``obj`` is a config object that ``@configurable`` routes to ``from_config``."""
    if isinstance(obj, _FvcoreCfgNode):
        return True
    try:
        from omegaconf import DictConfig
    except ImportError:
        return False
    return isinstance(obj, DictConfig)


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    """Whether a call passes a config, positionally first or as the ``cfg`` keyword."""
    if args and _is_config(args[0]):
        return True
    return _is_config(kwargs.get("cfg", None))


def _get_args_from_config(from_config_func: Callable, *args: Any, **kwargs: Any) -> Dict:
    """Turn a config call into the keyword arguments of the decorated callable.

    ``from_config_func`` must name its first parameter ``cfg``. When it accepts
    ``*args``/``**kwargs`` it receives the whole call. Otherwise it receives the positional
    arguments and the keywords it declares; every other keyword is passed through to the
    decorated callable and overrides what ``from_config`` returned for that name.

    Raises:
        TypeError: ``from_config_func``'s first parameter is not called ``cfg``.
    """
    params = inspect.signature(from_config_func).parameters
    names = list(params.keys())
    if not names or names[0] != "cfg":
        if inspect.isfunction(from_config_func):
            owner = from_config_func.__name__
        else:
            owner = f"{from_config_func.__self__}.from_config"
        raise TypeError(f"{owner} must take 'cfg' as the first argument! Its parameters: {names}.")
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()):
        return from_config_func(*args, **kwargs)
    own = {k: v for k, v in kwargs.items() if k in params}
    passthrough = {k: v for k, v in kwargs.items() if k not in params}
    explicit = from_config_func(*args, **own)
    explicit.update(passthrough)
    return explicit


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """Let a class ``__init__`` or a function also be called with a config.

    Two conventions:

    1. On a class's ``__init__`` (the class defines ``from_config(cls, cfg, ...)`` as a
       classmethod returning ``__init__``'s keyword arguments)::

           class Head(nn.Module):
               @configurable
               def __init__(self, *, in_dim, num_classes=80): ...

               @classmethod
               def from_config(cls, cfg, in_dim):
                   return {"in_dim": in_dim, "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}

           Head(in_dim=8, num_classes=3)   # explicit
           Head(cfg, 8)                    # via from_config
           Head(cfg, in_dim=8, num_classes=5)  # num_classes overrides from_config's value

    2. On a function, naming the translator::

           @configurable(from_config=lambda cfg: {"k": cfg.K})
           def f(k, scale=1.0): ...

           f(k=3); f(cfg); f(cfg, scale=2.0)

    A call counts as a config call when its first positional argument, or its ``cfg``
    keyword, is a ``CfgNode`` (or an omegaconf ``DictConfig`` when omegaconf is installed).
    ``@configurable()`` is the same as ``@configurable``.

    Raises:
        TypeError: misuse (decorating something other than ``__init__`` without
            ``from_config``; ``from_config`` not a function or not a classmethod; its first
            parameter not named ``cfg``).
        AttributeError: the decorated ``__init__``'s class has no ``from_config``.
    """
    if init_func is not None:
        if not (
            inspect.isfunction(init_func)
            and from_config is None
            and init_func.__name__ == "__init__"
        ):
            raise TypeError(
                "Incorrect use of @configurable: use it bare on a class's __init__, or as "
                "@configurable(from_config=fn) on a function."
            )

        @functools.wraps(init_func)
        def wrapped_init(self, *args: Any, **kwargs: Any) -> None:
            try:
                class_from_config = type(self).from_config
            except AttributeError as e:
                raise AttributeError(
                    f"Class {type(self).__name__} uses @configurable but has no 'from_config' "
                    "classmethod."
                ) from e
            if not inspect.ismethod(class_from_config):
                raise TypeError(
                    f"{type(self).__name__}.from_config must be a classmethod for @configurable."
                )
            if _called_with_cfg(*args, **kwargs):
                init_func(self, **_get_args_from_config(class_from_config, *args, **kwargs))
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable
    if not inspect.isfunction(from_config):
        raise TypeError(
            f"from_config argument of configurable must be a function, got {type(from_config)}."
        )

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped_func(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                return func(**_get_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped_func.from_config = from_config
        return wrapped_func

    return decorate
