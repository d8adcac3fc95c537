"""training/device.py: device choice and the guarded torch_npu import; the torch_npu paths run against the
recording fakes in tests/fakes (the `fakes` fixture of conftest.py)."""
import sys
import types

import pytest
import torch

from training import device as devices
from training.errors import UserError


def test_broken_torch_npu_is_reported_with_its_reason(fresh_imports, tmp_path):
    (tmp_path / "torch_npu.py").write_text("raise OSError('libhccl.so: cannot open shared object file')\n")
    fresh_imports.syspath_prepend(str(tmp_path))
    cause = "CANN libraries missing (libhccl.so): source test/env_npu.sh"
    with pytest.raises(UserError) as info:
        devices.resolve_device_type("npu")
    assert str(info.value) == "--device npu: torch_npu cannot be used ({})".format(cause)
    # auto falls back with one warning line naming the cause, and the failed import is not retried
    warnings = []
    fallback = devices.resolve_device_type("auto", warn=warnings.append)
    assert fallback in ("cuda", "cpu")
    assert warnings == ["warning: --device auto: torch_npu is installed but cannot be used ({}); using {}".format(
        cause, fallback)]
    assert devices.resolve_device_type("cpu") == "cpu"


def test_sys_exit_inside_torch_npu_import_is_caught(fresh_imports, tmp_path):
    (tmp_path / "torch_npu.py").write_text("import sys\nsys.exit(1)\n")
    fresh_imports.syspath_prepend(str(tmp_path))
    module, reason = devices.import_torch_npu()
    assert module is None and reason.startswith("SystemExit")


def test_fake_npu_is_chosen_by_auto_and_selected(fakes):
    _, torch_npu = fakes
    assert devices.resolve_device_type("auto") == "npu"
    assert devices.device_count("npu") == 8
    try:
        devices.set_device("npu", 3)
    except RuntimeError:
        pass  # this torch has no "npu" device type (the real torch_npu registers it); the call is what we check
    assert ("set_device", (3,), {}) in torch_npu.CALLS
    with pytest.raises(UserError, match=r"npu device index 8 does not exist: 8 visible .*ASCEND_RT_VISIBLE_DEVICES"):
        devices.set_device("npu", 8)
    assert devices.default_backend("npu") == "hccl"
    assert devices.resolve_device_type("gpu" if torch.cuda.is_available() else "cpu") in ("cuda", "cpu")


def test_cuda_request_without_gpu_is_a_user_error(monkeypatch):
    """Runs on GPU machines too: the machine is made to look GPU-less instead of skipping."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("gpu", "cuda"):
        with pytest.raises(UserError, match=r"^--device cuda: torch.cuda.is_available\(\) is False"):
            devices.resolve_device_type(name)


def test_builtin_torch_npu_of_pytorch_1_5_is_used(fresh_imports):
    """Ascend PyTorch 1.5.0 has torch.npu built in and no torch_npu package."""
    fresh_imports.setitem(sys.modules, "torch_npu", None)
    builtin = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)
    fresh_imports.setattr(torch, "npu", builtin, raising=False)
    assert devices.import_torch_npu() == (builtin, None)
    assert devices.resolve_device_type("npu") == "npu" and devices.device_count("npu") == 2
    fresh_imports.setattr(torch, "npu", types.SimpleNamespace(is_available=lambda: False), raising=False)
    with pytest.raises(UserError, match="torch_npu cannot be used"):
        devices.resolve_device_type("npu")
