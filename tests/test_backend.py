"""The backend switch: SEPHNET_BACKEND parsing, forcing, and lazy name resolution."""
import os
import subprocess
import sys

import pytest

from sephnet import backend


def _run(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


@pytest.mark.slow  # subprocesses: over 10 s on 2 cores
def test_forcing_core_prints_core():
    out = _run("import sephnet.backend as b; print(b.BACKEND)", SEPHNET_BACKEND="core")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "core"


def test_choose_backend_rejects_unknown_value():
    with pytest.raises(ValueError, match="SEPHNET_BACKEND='tensorflow'.*auto, detectron2, core"):
        backend.choose_backend("tensorflow")


def test_choose_backend_core_and_auto_without_detectron2(monkeypatch):
    monkeypatch.setattr(backend, "_detectron2_import_error", lambda: ModuleNotFoundError("x"))
    assert backend.choose_backend("core") == "core"
    assert backend.choose_backend("") == "core"
    assert backend.choose_backend("AUTO") == "core"


def test_forcing_detectron2_without_it_explains_how_to_proceed(monkeypatch):
    monkeypatch.setattr(backend, "_detectron2_import_error", lambda: ModuleNotFoundError("gone"))
    with pytest.raises(backend.BackendError) as info:
        backend.choose_backend("detectron2")
    message = str(info.value)
    assert "detectron2 cannot be imported (gone)" in message
    assert "unset SEPHNET_BACKEND" in message and "'core'" in message


def test_auto_prefers_detectron2_when_importable(monkeypatch):
    monkeypatch.setattr(backend, "_detectron2_import_error", lambda: None)
    assert backend.choose_backend("auto") == "detectron2"


def test_forcing_detectron2_in_a_fresh_process_fails_clearly_when_missing():
    if backend._detectron2_import_error() is None:
        pytest.skip("detectron2 is installed here; the missing-detectron2 path is covered above")
    out = _run("import sephnet.backend", SEPHNET_BACKEND="detectron2")
    assert out.returncode != 0
    assert "SEPHNET_BACKEND=detectron2 but detectron2 cannot be imported" in out.stderr


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        backend.no_such_name  # noqa: B018


# In the contract, but added to detectron2 after v0.6: absent from a v0.6 install.
_AFTER_V06 = {"move_device_like"}


def test_every_contract_name_resolves_from_the_backend():
    expected = set(backend._NAMES)
    if backend.BACKEND == "detectron2":
        expected -= _AFTER_V06
    missing = []
    for name in sorted(expected):
        try:
            getattr(backend, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name}: {e}")
    assert not missing, "\n".join(missing)
