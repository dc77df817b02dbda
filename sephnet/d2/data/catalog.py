"""Process-global catalogs of datasets and their metadata (detectron2.data.catalog).

``DatasetCatalog`` maps a dataset name (the strings used in ``cfg.DATASETS.TRAIN``) to a
zero-argument function returning ``list[dict]`` in detectron2's dataset-dict format.
``MetadataCatalog`` maps the same names to a :class:`Metadata` namespace holding facts
about the dataset (``thing_classes``, ``thing_dataset_id_to_contiguous_id``,
``json_file``, ``image_root``, ``evaluator_type``, ...).
"""
import copy
import logging
import types
from collections import UserDict
from typing import Any, Callable, Dict, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]

logger = logging.getLogger(__name__)


class CatalogConflictError(AssertionError, ValueError):
    """A name or a metadata value is set twice with different content.

    detectron2 v0.6 raises ``AssertionError`` here; this class is both an
    ``AssertionError`` (for callers written against detectron2) and a ``ValueError``
    (the house convention for user mistakes).
    """


class _DatasetCatalog(UserDict):
    """Registry ``name -> function returning list[dict]``.

    The function is called on every :meth:`get`; it must return the same dicts each
    time it is called.
    """

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``.

        Raises:
            TypeError: ``func`` is not callable.
            CatalogConflictError: ``name`` is already registered.
        """
        if not callable(func):
            raise TypeError(
                f"DatasetCatalog.register({name!r}, ...) needs a callable returning "
                f"list[dict]; got {type(func).__name__}."
            )
        if name in self:
            raise CatalogConflictError(f"Dataset '{name}' is already registered!")
        self[name] = func

    def get(self, name: str) -> List[dict]:
        """Call the function registered under ``name`` and return its dataset dicts.

        Raises:
            KeyError: ``name`` is not registered; the message lists the registered names.
        """
        if name not in self.data:
            raise KeyError(
                f"Dataset '{name}' is not registered! Available datasets are: "
                f"{', '.join(self.data.keys())}"
            )
        return self.data[name]()

    def list(self) -> List[str]:
        """Names of all registered datasets, in registration order."""
        return list(self.data.keys())

    def remove(self, name: str) -> None:
        """Unregister ``name`` (alias of ``pop``); ``KeyError`` if it is not registered."""
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.data.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Attribute bag of facts about one dataset, e.g. ``meta.thing_classes``.

    Each attribute is set-once: setting it again to an equal value is a no-op, to a
    different value raises :class:`CatalogConflictError`. Reading a missing attribute
    raises ``AttributeError`` listing the keys that exist. The legacy names
    ``class_names``, ``dataset_id_to_contiguous_id`` and ``stuff_class_names`` are
    redirected to their current names with a warning.
    """

    name: str = "N/A"

    _RENAMED = {
        "class_names": "thing_classes",
        "dataset_id_to_contiguous_id": "thing_dataset_id_to_contiguous_id",
        "stuff_class_names": "stuff_classes",
    }

    def __getattr__(self, key: str) -> Any:
        # Only reached when normal attribute lookup failed.
        if key in self._RENAMED:
            logger.warning("Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            return getattr(self, self._RENAMED[key])
        keys = [k for k in self.__dict__ if k != "name"]
        if keys:
            raise AttributeError(
                f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}'. "
                f"Available keys are {sorted(self.__dict__.keys())}."
            )
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}': "
            "metadata is empty."
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key in self._RENAMED:
            logger.warning("Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            key = self._RENAMED[key]
        if key in self.__dict__:
            old = self.__dict__[key]
            if not _values_equal(old, val):
                raise CatalogConflictError(
                    f"Attribute '{key}' in the metadata of '{self.name}' cannot be set "
                    f"to a different value!\n{old} != {val}"
                )
            return
        super().__setattr__(key, val)

    def as_dict(self) -> Dict[str, Any]:
        """A shallow copy of all attributes (editing it does not change the metadata)."""
        return copy.copy(self.__dict__)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes at once (each with set-once semantics); returns self."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it does not exist."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default


def _values_equal(a: Any, b: Any) -> bool:
    """``a == b`` reduced to one bool (numpy arrays compare element-wise)."""
    result = a == b
    if isinstance(result, bool):
        return result
    try:
        return bool(result.all())  # numpy / torch element-wise comparison
    except AttributeError:
        return bool(result)


class _MetadataCatalog(UserDict):
    """Registry ``name -> Metadata``; :meth:`get` creates an empty entry on first use.

    The Metadata of a name is a singleton: once created, later ``get`` calls return
    the same object.
    """

    def get(self, name: str) -> Metadata:
        """The :class:`Metadata` of ``name`` (created empty if it does not exist yet).

        Raises:
            ValueError: ``name`` is empty.
        """
        if not name:
            raise ValueError("MetadataCatalog.get() needs a non-empty dataset name.")
        meta = self.data.get(name)
        if meta is None:
            meta = self.data[name] = Metadata(name=name)
        return meta

    def list(self) -> List[str]:
        """Names that have metadata."""
        return list(self.data.keys())

    def remove(self, name: str) -> None:
        """Drop the metadata of ``name`` (alias of ``pop``)."""
        self.pop(name)

    def __str__(self) -> str:
        return f"MetadataCatalog(registered metadata: {', '.join(self.data.keys())})"

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()
