"""Registry: registration, duplicate names, helpful unknown-name errors, fvcore compatibility."""

import pytest
from fvcore.common.registry import Registry as FvcoreRegistry

from sephnet.d2.utils.registry import Registry


def test_register_as_decorator_and_call():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    def beta():
        return 2

    reg.register(beta)
    assert reg.get("Alpha") is Alpha
    assert reg.get("beta")() == 2
    assert "Alpha" in reg and "gamma" not in reg
    assert dict(reg) == {"Alpha": Alpha, "beta": beta}
    assert isinstance(reg, FvcoreRegistry)


def test_duplicate_name_raises():
    reg = Registry("THING")

    @reg.register()
    def f():
        pass

    def g():
        pass

    g.__name__ = "f"
    with pytest.raises(ValueError, match="'f' was already registered in 'THING'"):
        reg.register(g)
    with pytest.raises(AssertionError):  # fvcore's exception type keeps working
        reg.register(g)
    assert reg.get("f") is f


def test_unknown_name_lists_registered_names():
    reg = Registry("ROI_HEADS")

    @reg.register()
    def StandardROIHeads():
        pass

    @reg.register()
    def CascadeROIHeads():
        pass

    with pytest.raises(KeyError) as info:
        reg.get("StandardRoiHeads")
    message = str(info.value)
    assert "StandardRoiHeads" in message and "ROI_HEADS" in message
    assert "CascadeROIHeads, StandardROIHeads" in message
