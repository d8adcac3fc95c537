"""training/precision.py: AMP (apex on NPU and CUDA, native float16 / bfloat16, none) and the optimizers apex
brings; the torch_npu and apex paths run against the recording fakes in tests/fakes."""
import sys

import pytest
import torch
from conftest import requires_torch, small_net
from torch import nn

from training import device as devices
from training import engine, optim, precision
from training.checkpoints import checkpoint as ckpt
from training.errors import UserError


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
    settings = engine.LoopSettings(criterion=nn.CrossEntropyLoss(), amp=amp,
                                   preprocess=lambda x, train: x.float() / 255.0, device=torch.device("cpu"),
                                   world_size=1)
    opt = engine.Optimization(optimizer=optimizer, schedule=optim.LrSchedule(0.1, 1, 3))
    before = net[0].weight.detach().clone()
    record = engine.train_one_epoch(net, batches, settings, opt, epoch=0, steps=3)
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


def test_native_amp_on_a_torch_without_cpu_autocast_trains_in_fp32_and_says_why(monkeypatch, native_bf16):
    """torch < 1.10 has no torch.autocast (the torch 1.5 and 1.8 lanes run this for real; here it is removed): --amp
    trains in fp32 with one line; autocast asked for directly is one error line naming the torch needed."""
    monkeypatch.delattr(torch, "autocast", raising=False)
    assert precision.build_amp(True, "cpu", "O2", "64", log=lambda line: None).kind == "off"
    assert "has no CPU autocast (torch >= 1.10), training in fp32" in precision.choose_dtype(True, "cpu")[1]
    with pytest.raises(UserError, match=r"needs torch >= 1\.10"):
        precision.Amp(True, "cpu", dtype=torch.bfloat16).autocast()
    with pytest.raises(UserError, match=r"--amp-dtype bfloat16 needs torch.autocast \(torch >= 1\.10\)"):
        precision.check_flags(True, "cpu", amp_dtype="bfloat16")


def test_installed_apex_is_not_used_or_mentioned_on_cpu(fakes, native_bf16):
    apex, _ = fakes
    lines = []
    amp = precision.build_amp(True, "cpu", "O2", "64", log=lines.append)
    assert amp.kind == CPU_AMP_KIND and amp.apex_optimizers is None
    assert lines == []
    assert apex.CALLS == []


def test_native_amp_on_a_gpu_without_apex_warns_once(fresh_imports):
    fresh_imports.setitem(sys.modules, "apex", None)  # import apex -> ImportError
    gpu_lines = []
    precision.build_amp(True, "cuda", "O2", "64", log=gpu_lines.append)
    assert len(gpu_lines) == 1 and gpu_lines[0].startswith("warning: --amp: apex is not available (")


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
