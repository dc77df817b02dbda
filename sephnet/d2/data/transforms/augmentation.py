"""Augmentation policies (detectron2.data.transforms.augmentation).

An :class:`Augmentation` looks at its inputs (by default only ``image``) and returns a
deterministic :class:`~fvcore.transforms.transform.Transform`; calling it on an
:class:`AugInput` also applies that transform in place. The returned transforms are then
re-applied to annotations (boxes, polygons, masks) so that they stay aligned with the
image.

Randomness comes from numpy's global RNG (``np.random``), as in detectron2.
"""
import inspect
import pprint
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from fvcore.transforms.transform import Transform, TransformList

__all__ = [
    "Augmentation",
    "AugmentationList",
    "AugInput",
    "TransformGen",
    "apply_transform_gens",
    "StandardAugInput",
    "apply_augmentations",
]


def _check_img_dtype(img: Any) -> None:
    """Raise TypeError/ValueError unless ``img`` is an (H, W[, C]) uint8 or float array."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"[Augmentation] needs a numpy array image; got {type(img).__name__}.")
    if np.issubdtype(img.dtype, np.integer) and img.dtype != np.uint8:
        raise TypeError(
            f"[Augmentation] got an image of dtype {img.dtype}; use uint8 or floating point."
        )
    if img.ndim not in (2, 3):
        raise ValueError(
            f"[Augmentation] expects an image of shape (H, W) or (H, W, C); got {img.shape}."
        )


def _input_names(aug: "Augmentation") -> Tuple[str, ...]:
    """Names of the AugInput attributes ``aug.get_transform`` needs (cached on ``aug``)."""
    if aug.input_args is None:
        params = list(inspect.signature(aug.get_transform).parameters.values())
        if len(params) == 1:
            # A single argument is the image, whatever it is called.
            names: Tuple[str, ...] = ("image",)
        else:
            variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            if any(p.kind in variadic for p in params):
                raise TypeError(
                    f"{type(aug).__name__}.get_transform takes *args/**kwargs, so the default "
                    "Augmentation.__call__ cannot tell which inputs it needs; set "
                    "`input_args` or override __call__."
                )
            names = tuple(p.name for p in params)
        aug.input_args = names
    return aug.input_args


class Augmentation:
    """Base class of augmentation policies.

    Subclasses implement :meth:`get_transform` with positional arguments named after
    attributes of the input (``image``, ``boxes``, ``sem_seg``); the default
    :meth:`__call__` fetches those attributes, asks for a transform and applies it.
    """

    input_args: Optional[Tuple[str, ...]] = None
    """Attribute names passed to :meth:`get_transform`; derived from its signature if None."""

    def _init(self, params: Optional[dict] = None) -> None:
        """Store constructor arguments as attributes (pass ``locals()``)."""
        for key, value in (params or {}).items():
            if key != "self" and not key.startswith("_"):
                setattr(self, key, value)

    def get_transform(self, *args: Any) -> Transform:
        """Decide (possibly at random) the transform to apply to these inputs.

        Args:
            args: the input attributes named by :attr:`input_args`, e.g. an
                ``(H, W[, C])`` uint8/float ``image``, ``(N, 4)`` float32 XYXY_ABS ``boxes``,
                an ``(H, W)`` uint8 ``sem_seg``.

        Returns:
            A deterministic Transform.
        """
        raise NotImplementedError

    def __call__(self, aug_input: Any) -> Transform:
        """Transform ``aug_input`` in place and return the transform used.

        Args:
            aug_input: an object with the attributes named by :attr:`input_args` and a
                ``transform(tfm)`` method (e.g. :class:`AugInput`).
        """
        args = []
        for name in _input_names(self):
            try:
                args.append(getattr(aug_input, name))
            except AttributeError as e:
                raise AttributeError(
                    f"{type(self).__name__}.get_transform needs the input attribute '{name}', "
                    f"which {type(aug_input).__name__} does not have."
                ) from e
        tfm = self.get_transform(*args)
        if not isinstance(tfm, (Transform, TransformList)):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform; "
                f"got {type(tfm).__name__}."
            )
        aug_input.transform(tfm)
        return tfm

    def _rand_range(self, low: float = 1.0, high: Optional[float] = None, size=None):
        """Uniform float(s) in ``[low, high)``, or ``[0, low)`` when ``high`` is None."""
        if high is None:
            low, high = 0, low
        return np.random.uniform(low, high, [] if size is None else size)

    def __repr__(self) -> str:
        """``ClassName(arg=value, ...)`` listing constructor arguments that differ from defaults."""
        parts = []
        for name, param in inspect.signature(self.__init__).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or not hasattr(
                self, name
            ):
                return super().__repr__()
            value = getattr(self, name)
            if value is param.default:
                continue
            text = pprint.pformat(value)
            parts.append(f"{name}={'...' if chr(10) in text else text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


class _TransformToAug(Augmentation):
    """An Augmentation that always returns one fixed Transform."""

    def __init__(self, tfm: Transform):
        self.tfm = tfm

    def get_transform(self, *args: Any) -> Transform:
        return self.tfm

    def __repr__(self) -> str:
        return repr(self.tfm)

    __str__ = __repr__


def _transform_to_aug(tfm_or_aug: Union[Transform, Augmentation]) -> Augmentation:
    """Return an Augmentation unchanged, or wrap a fixed Transform into one."""
    if isinstance(tfm_or_aug, Augmentation):
        return tfm_or_aug
    if isinstance(tfm_or_aug, Transform):
        return _TransformToAug(tfm_or_aug)
    raise TypeError(
        f"Expected an Augmentation or a Transform; got {type(tfm_or_aug).__name__}: {tfm_or_aug!r}"
    )


class AugmentationList(Augmentation):
    """Apply augmentations one after the other; the k-th sees the output of the (k-1)-th.

    :meth:`get_transform` is not available for a list (the inputs of later
    augmentations only exist after earlier ones ran); use :meth:`__call__`.
    """

    def __init__(self, augs: Sequence[Union[Augmentation, Transform]]):
        """
        Args:
            augs: augmentations, or fixed transforms (wrapped automatically).
        """
        super().__init__()
        self.augs = [_transform_to_aug(x) for x in augs]

    def __call__(self, aug_input: Any) -> TransformList:
        """Apply every augmentation in order; returns the TransformList of what was done."""
        return TransformList([aug(aug_input) for aug in self.augs])

    def __repr__(self) -> str:
        return f"AugmentationList[{', '.join(str(x) for x in self.augs)}]"

    __str__ = __repr__


class AugInput:
    """The standard input of augmentations: an image plus optional boxes and semantic mask.

    Attributes:
        image: ``(H, W)`` or ``(H, W, C)`` uint8 in [0, 255] or float array.
        boxes: ``(N, 4)`` float XYXY_ABS boxes, or None.
        sem_seg: ``(H, W)`` uint8 label image, or None.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: Optional[np.ndarray] = None,
        sem_seg: Optional[np.ndarray] = None,
    ):
        _check_img_dtype(image)
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Replace every attribute by its transformed version."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(
        self, augmentations: List[Union[Augmentation, Transform]]
    ) -> TransformList:
        """Same as ``AugmentationList(augmentations)(self)``."""
        return AugmentationList(augmentations)(self)


def apply_augmentations(
    augmentations: List[Union[Transform, Augmentation]], inputs: Union[np.ndarray, AugInput]
):
    """Apply ``augmentations`` to an image array or an :class:`AugInput`.

    Returns:
        ``(transformed image or the AugInput, TransformList)``.
    """
    if isinstance(inputs, np.ndarray):
        aug_input = AugInput(inputs)
        tfms = aug_input.apply_augmentations(augmentations)
        return aug_input.image, tfms
    return inputs, inputs.apply_augmentations(augmentations)


apply_transform_gens = apply_augmentations
"""Old name of :func:`apply_augmentations`."""

TransformGen = Augmentation
"""Old name of :class:`Augmentation`."""

StandardAugInput = AugInput
"""Old name of :class:`AugInput`."""
