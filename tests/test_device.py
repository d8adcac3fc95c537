"""training/device.py (device choice, guarded imports), training/optim.py (weight-decay groups) and
training/precision.py (AMP); the torch_npu and apex paths run against the recording fakes in tests/fakes."""
import sys
import types

import pytest
import torch
from conftest import FAKES_DIR, requires_torch
from torch import nn

from training.checkpoints import checkpoint as ckpt
from training import device as devices
from training import engine, optim, precision
from training.errors import UserError


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


@pytest.fixture
def fresh_imports(monkeypatch):
    """Forget cached guarded imports and fake modules; restore torch.npu afterwards."""
    names = ("torch_npu", "apex", "apex.amp", "apex.optimizers")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.setattr(devices, "_IMPORTS", {})
    monkeypatch.setattr(torch, "npu", None, raising=False)
    yield monkeypatch
    # monkeypatch only restores keys that existed before: drop the fakes imported during the test ourselves
    for name in names:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


@pytest.fixture
def fakes(fresh_imports):
    fresh_imports.syspath_prepend(FAKES_DIR)
    import apex
    import torch_npu
    del apex.CALLS[:]
    del torch_npu.CALLS[:]
    return apex, torch_npu


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


def test_weight_decay_groups():
    net = small_net()
    groups = optim.parameter_groups(net, 1e-4, norm_weight_decay=0.0, bias_weight_decay=0.0)
    by_wd = {g["weight_decay"]: len(g["params"]) for g in groups}
    assert by_wd == {1e-4: 2, 0.0: 4}  # conv + fc weights; BN weight/bias + conv/fc biases
    assert len(optim.parameter_groups(net, 1e-4)) == 1  # defaults: one group with --wd
    assert sum(len(g["params"]) for g in optim.parameter_groups(net, 1e-4, 0.0)) == 6


def test_apex_path_with_fakes_trains_and_checkpoints(fakes, capsys):
    apex, _ = fakes
    amp = precision.build_amp(True, "npu", "O2", "64")
    assert amp.kind == "apex" and amp.scaler is None
    net = small_net()
    optimizer = optim.build_optimizer(net, lr=0.1, momentum=0.9, weight_decay=1e-4, norm_weight_decay=0.0,
                                      apex_optimizers=amp.apex_optimizers, device_type="npu")
    assert type(optimizer).__name__ == "NpuFusedSGD"
    with pytest.raises(RuntimeError, match="should be used with AMP"):  # as Ascend apex: amp.initialize first
        optimizer.step()
    net, optimizer = amp.prepare(net, optimizer)
    assert ("initialize", {"opt_level": "O2", "loss_scale": 64.0, "combine_grad": True}) in apex.CALLS

    batches = [(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0]), 0)] * 3
    loop = engine.Loop(criterion=nn.CrossEntropyLoss(), amp=amp, preprocess=lambda x, train: x.float() / 255.0,
                       device=torch.device("cpu"), world_size=1)
    opt = engine.Optimization(optimizer=optimizer, schedule=optim.LrSchedule(0.1, 1, 3))
    before = net[0].weight.detach().clone()
    record = engine.train_one_epoch(net, batches, loop, opt, epoch=0, steps=3)
    assert [c for c in apex.CALLS if c[0] == "scale_loss"] == [("scale_loss", "NpuFusedSGD")] * 3
    assert not torch.equal(before, net[0].weight)
    assert record["kind"] == "epoch" and record["loss"] > 0

    saved = ckpt.build_checkpoint(1, "x", net.state_dict(), optimizer.state_dict(), 0.0, {}, amp_state=amp.state_dict())
    assert saved["amp"] == {"loss_scaler0": {"loss_scale": 64.0, "unskipped": 3}}
    amp.load_state_dict(saved["amp"])
    assert apex.CALLS[-1] == ("load_state_dict", saved["amp"])

    # on CUDA, NVIDIA apex has no combine_grad and the optimizer stays torch's SGD
    del apex.CALLS[:]
    cuda_amp = precision.build_amp(True, "cuda", "O1", "-1")
    cuda_amp.prepare(small_net(), torch.optim.SGD(small_net().parameters(), lr=0.1))
    assert apex.CALLS == [("initialize", {"opt_level": "O1", "loss_scale": "dynamic", "combine_grad": None})]
    assert type(optim.build_optimizer(small_net(), lr=0.1, momentum=0.9, weight_decay=0.0, device_type="cuda",
                                      apex_optimizers=devices.import_apex()[1])) is torch.optim.SGD


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU with bf16 in hardware, whatever this machine has (the choice itself: tests/test_precision.py)."""
    monkeypatch.setattr(precision, "native_bf16_feature", lambda: "amx_bf16")
    for name in precision.ONEDNN_ISA_ENV:
        monkeypatch.delenv(name, raising=False)


# --amp on such a CPU: bf16 autocast, or fp32 on a torch without CPU autocast (torch < 1.10, the 1.8 lane)
CPU_AMP_KIND = "native-bfloat16" if hasattr(torch, "autocast") else "off"


def test_native_amp_on_cpu_uses_bfloat16_without_an_apex_warning(fresh_imports, native_bf16):
    """apex never applies on a CPU: no warning about it, whether it is installed (the fakes) or not."""
    fresh_imports.setitem(sys.modules, "apex", None)  # import apex -> ImportError
    lines = []
    amp = precision.build_amp(True, "cpu", "O2", "64", log=lines.append)
    assert lines == []  # main.py prints the CPU's precision line (precision.choose_dtype)
    gpu_lines = []
    precision.build_amp(True, "cuda", "O2", "64", log=gpu_lines.append)
    assert len(gpu_lines) == 1 and gpu_lines[0].startswith("warning: --amp: apex is not available (")
    assert amp.kind == CPU_AMP_KIND and amp.scaler is None and amp.state_dict() is None
    assert precision.build_amp(False, "cpu").kind == "off"


@requires_torch("1.10", "CPU autocast")
def test_native_amp_on_cpu_runs_in_bfloat16(native_bf16):
    amp = precision.build_amp(True, "cpu", "O2", "64", log=lambda line: None)
    with amp.autocast():
        out = nn.Linear(4, 2)(torch.ones(1, 4))
    assert out.dtype == torch.bfloat16


def test_native_amp_on_a_torch_without_cpu_autocast_warns_and_runs_float32(monkeypatch, native_bf16):
    """torch < 1.10 has no torch.autocast (the torch 1.8 lane runs this for real; here it is removed)."""
    monkeypatch.delattr(torch, "autocast", raising=False)
    assert precision.build_amp(True, "cpu", "O2", "64", log=lambda line: None).kind == "off"
    assert "has no CPU autocast (torch >= 1.10), training in fp32" in precision.choose_dtype(True, "cpu")[1]
    amp = precision.Amp(True, "cpu")  # asked for directly (tools/bench_model.py): a warning, then float32
    with pytest.warns(UserWarning, match="no CPU autocast: --amp runs in float32"):
        with amp.autocast():
            out = nn.Linear(4, 2)(torch.ones(1, 4))
    assert out.dtype == torch.float32


def test_installed_apex_is_not_used_or_mentioned_on_cpu(fakes, native_bf16):
    apex, _ = fakes
    lines = []
    amp = precision.build_amp(True, "cpu", "O2", "64", log=lines.append)
    assert amp.kind == CPU_AMP_KIND and amp.apex_optimizers is None
    assert lines == []
    assert apex.CALLS == []


def test_bad_amp_flags():
    with pytest.raises(UserError, match="--loss-scale"):
        precision.build_amp(True, "cpu", "O2", "lots", log=lambda s: None)
    with pytest.raises(UserError, match="--loss-scale"):
        precision.build_amp(True, "cpu", "O2", "0", log=lambda s: None)
    with pytest.raises(UserError, match="--opt-level"):
        precision.build_amp(True, "cpu", "O7", None, log=lambda s: None)


def test_apex_fused_sgd_only_with_o1_o2(fakes):
    """Ascend apex's NpuFusedSGD supports amp O1/O2 only: other levels (and CUDA) keep torch's SGD."""
    fused = precision.build_amp(True, "npu", "O1", "64").apex_optimizers
    optimizer = optim.build_optimizer(small_net(), lr=0.1, momentum=0.9, weight_decay=0.0, apex_optimizers=fused,
                                      device_type="npu")
    assert type(optimizer).__name__ == "NpuFusedSGD" and type(optimizer) is fused.NpuFusedSGD
    for level, device_type in (("O0", "npu"), ("O3", "npu"), ("O2", "cuda")):
        amp = precision.build_amp(True, device_type, level, "64")
        assert amp.kind == "apex" and amp.apex_optimizers is None
        optimizer = optim.build_optimizer(small_net(), lr=0.1, momentum=0.9, weight_decay=0.0,
                                          apex_optimizers=amp.apex_optimizers, device_type=device_type)
        assert type(optimizer) is torch.optim.SGD
    assert precision.build_amp(False, "npu").apex_optimizers is None


def test_native_amp_on_npu_uses_torch_npu_scaler_and_autocast(fakes):
    """Without apex, NPU AMP uses torch_npu's GradScaler (NPU overflow handling), not torch.amp.GradScaler."""
    apex, torch_npu = fakes
    sys.modules["apex.amp"] = None  # import apex.amp -> ImportError (restored by the fixture)
    lines = []
    amp = precision.build_amp(True, "npu", "O2", "64", log=lines.append)
    assert amp.kind == "native-float16" and lines[0].startswith("warning: --amp: apex is not available")
    assert isinstance(amp.scaler, torch_npu.GradScaler)
    assert ("GradScaler", (), {"init_scale": 64.0, "growth_interval": 2 ** 30}) in torch_npu.CALLS
    dynamic = precision.build_amp(True, "npu", "O2", "-1", log=lines.append)
    assert torch_npu.CALLS[-1] == ("GradScaler", (), {"init_scale": 2.0 ** 16, "growth_interval": 2000})
    assert isinstance(dynamic.scaler, torch_npu.GradScaler)
    # this torch has no "npu" autocast device: the context falls back to torch.npu.amp.autocast
    with amp.autocast():
        pass
    assert torch_npu.CALLS[-1] == ("autocast", (), {"enabled": True, "dtype": None})


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
