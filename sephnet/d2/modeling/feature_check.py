"""Explain a feature name from the config that the backbone does not output (core addition).

detectron2 v0.6 reports ``MODEL.ROI_HEADS.IN_FEATURES = ["p9"]`` as a bare ``KeyError: 'p9'``
from deep inside a head's ``from_config``; ``build_roi_heads`` calls
:func:`explain_missing_feature` to turn it into a message naming the config key, its value and
the available features.
"""
from typing import Mapping, NoReturn, Sequence

__all__ = ["MissingFeatureError", "explain_missing_feature"]


class MissingFeatureError(KeyError):
    """A config key names a feature map that the backbone does not output (a ``KeyError``,
    as detectron2 raises, with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0])


def explain_missing_feature(
    error: KeyError, config_key: str, features: Sequence[str], input_shape: Mapping[str, object]
) -> NoReturn:
    """Re-raise ``error`` (caught while building a head from ``input_shape``) as a
    :class:`MissingFeatureError` when its key is one of ``features`` (the value of
    ``config_key``) absent from ``input_shape``; otherwise re-raise it unchanged."""
    missing = error.args[0] if error.args else None
    if isinstance(missing, str) and missing in features and missing not in input_shape:
        raise MissingFeatureError(
            f"{config_key} = {list(features)} names '{missing}', which the backbone does not "
            f"output; it outputs {sorted(input_shape)}."
        ) from error
    raise error
