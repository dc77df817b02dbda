"""Checks shared by the component modules of :mod:`sephnet.config` (not a component: the
leading underscore keeps it out of ``add_sephnet_config`` / ``validate_sephnet_config``)."""

__all__ = ["check_int_at_least"]


def check_int_at_least(value, key: str, minimum: int) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r}; expected an int >= {minimum}.")
