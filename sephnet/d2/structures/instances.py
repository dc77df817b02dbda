"""``Instances``: the per-image container of detections / annotations ("fields") of equal length."""
import itertools
from typing import Any, Dict, List, Tuple, Union

import torch

from sephnet.d2.structures.errors import StructureError


class Instances:
    """The instances found in (or annotated on) one image.

    Each field (``gt_boxes``, ``pred_classes``, ``scores``, ...) is any object with ``__len__``
    (tensor, ``Boxes``, masks, list); all fields have the same length, the number of instances.
    Fields are set and read as attributes (``inst.scores = t``; ``inst.scores``) or through
    ``set``/``get``/``has``/``remove``. Attributes whose names start with ``_`` are private and
    are not fields.

    Indexing (``inst[mask]``, ``inst[idx_tensor]``, ``inst[2:5]``, ``inst[3]``) indexes every
    field and returns a new ``Instances`` for the same image.
    """

    def __init__(self, image_size: Tuple[int, int], **kwargs: Any):
        """
        Args:
            image_size: (height, width) of the image.
            kwargs: initial fields.
        """
        self._image_size = image_size
        self._fields: Dict[str, Any] = {}
        for name, value in kwargs.items():
            self.set(name, value)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width) of the image."""
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails, i.e. for fields (and during unpickling, when
        # _fields does not exist yet)
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set field ``name``.

        Raises:
            StructureError: (also an ``AssertionError``, as in detectron2) if ``len(value)``
                differs from the length of the existing fields.
        """
        data_len = len(value)
        if self._fields and len(self) != data_len:
            raise StructureError(
                f"Adding a field of length {data_len} to a Instances of length {len(self)} "
                f"(field '{name}')"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Whether field ``name`` exists."""
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete field ``name`` (``KeyError`` if absent)."""
        del self._fields[name]

    def get(self, name: str) -> Any:
        """Field ``name`` (``KeyError`` if absent)."""
        return self._fields[name]

    def get_fields(self) -> Dict[str, Any]:
        """The live name -> value dict of fields (modifying it modifies this object)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """A new ``Instances`` with ``.to(*args, **kwargs)`` applied to every field that has it."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            out.set(name, value)
        return out

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Instances":
        """Index every field.

        Args:
            item: an int (gives a length-1 ``Instances``), a slice, a bool mask of length N or
                an int64 index tensor.

        Raises:
            IndexError: for an int out of range.
        """
        if type(item) == int:  # noqa: E721 (bool and numpy ints are indexed as-is, as in detectron2)
            n = len(self)
            if item >= n or item < -n:
                raise IndexError("Instances index out of range!")
            # a slice keeps each field's dimensionality (an int would drop the first dim)
            item = slice(item, None, n)
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value[item])
        return out

    def __len__(self) -> int:
        for value in self._fields.values():
            # __len__ rather than len(): len() must return an int, which breaks tracing
            return value.__len__()
        raise NotImplementedError("len() of an Instances with no fields is undefined.")

    def __iter__(self):
        raise NotImplementedError("Instances cannot be iterated; index it or read its fields.")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenate the instances of several ``Instances`` of the same image size.

        Tensor fields are ``torch.cat``-ed, list fields chained, and other fields joined with
        their type's ``cat`` classmethod (``Boxes.cat``, ``BitMasks.cat``, ...). A single-item
        list returns that item itself.

        Raises:
            StructureError: for an empty list, a non-``Instances`` item or different image sizes.
            ValueError: for a field type that cannot be concatenated.
        """
        if len(instance_lists) == 0:
            raise StructureError("Instances.cat got an empty list")
        for i in instance_lists:
            if not isinstance(i, Instances):
                raise StructureError(f"Instances.cat expects Instances, got {type(i).__name__}")
        if len(instance_lists) == 1:
            return instance_lists[0]

        image_size = instance_lists[0].image_size
        if not isinstance(image_size, torch.Tensor):  # a tensor while tracing
            for i in instance_lists[1:]:
                if i.image_size != image_size:
                    raise StructureError(
                        f"Instances.cat: image sizes differ ({image_size} vs {i.image_size})"
                    )
        out = Instances(image_size)
        for name in instance_lists[0]._fields.keys():
            values = [i.get(name) for i in instance_lists]
            first = values[0]
            if isinstance(first, torch.Tensor):
                joined = torch.cat(values, dim=0)
            elif isinstance(first, list):
                joined = list(itertools.chain(*values))
            elif hasattr(type(first), "cat"):
                joined = type(first).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(first)} for concatenation")
            out.set(name, joined)
        return out

    def __str__(self) -> str:
        fields = ", ".join(f"{k}: {v}" for k, v in self._fields.items())
        return (
            f"{self.__class__.__name__}(num_instances={len(self)}, "
            f"image_height={self._image_size[0]}, image_width={self._image_size[1]}, "
            f"fields=[{fields}])"
        )

    __repr__ = __str__
