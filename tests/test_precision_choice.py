"""training/precision.py's choice of precision by what the hardware does: bf16 autocast on a CPU only where it has
bf16 in hardware, else fp32 with one line saying why; --amp-dtype bfloat16 forces bf16. The CPU's capability is
injected (monkeypatch), so every branch runs on any machine."""
import pytest
import torch
from conftest import requires_torch
from torch import nn

import main
from training import precision
from training.errors import UserError

TINY = ["--dummy", "-a", "shufflenet_v2_x0_5", "--epochs", "1", "--steps-per-epoch", "1", "--train-crop-size", "32",
        "--val-crop-size", "32", "-j", "0", "--num-classes", "3", "--device", "cpu", "--seed", "1", "-b", "2",
        "--lr", "0.01", "-p", "1"]
NO_NATIVE = ("=> --amp on cpu: this CPU has no native bf16 (avx512_bf16/amx_bf16), training in fp32 "
             "(--amp-dtype bfloat16 forces bf16 autocast)")


@pytest.fixture
def cpu_with(monkeypatch):
    """cpu_with(feature): this CPU reports `feature` ('amx_bf16', ... or None) as its native bf16, and oneDNN may
    use it (no ISA cap in the environment)."""
    for name in precision.ONEDNN_ISA_ENV:
        monkeypatch.delenv(name, raising=False)

    def inject(feature):
        monkeypatch.setattr(precision, "native_bf16_feature", lambda: feature)
    return inject


@requires_torch("1.10", "CPU autocast")
def test_cpu_with_native_bf16_trains_in_bf16(cpu_with):
    cpu_with("amx_bf16")
    dtype, line = precision.choose_dtype(True, "cpu")
    assert dtype == torch.bfloat16
    assert line == "=> --amp on cpu: bf16 autocast (native bf16 on this CPU: amx_bf16)"
    amp = precision.build_amp(True, "cpu", log=pytest.fail)  # nothing else to say
    with amp.autocast():
        assert nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16


def test_cpu_without_native_bf16_trains_in_fp32_and_says_why(cpu_with):
    cpu_with(None)
    dtype, line = precision.choose_dtype(True, "cpu")
    assert dtype is None
    if hasattr(torch, "autocast"):
        assert line == NO_NATIVE
    else:  # torch < 1.10 (the 1.8 lane): no CPU autocast at all, said as such
        assert line == "=> --amp on cpu: this torch {} has no CPU autocast (torch >= 1.10), training in fp32".format(
            torch.__version__)
    amp = precision.build_amp(True, "cpu", log=pytest.fail)
    assert amp.kind == "off" and amp.scaler is None
    with amp.autocast():
        assert nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.float32


@requires_torch("1.10", "torch.autocast")
@pytest.mark.parametrize("feature, says", [(None, "although this CPU has no native bf16 (emulated, expect it "
                                                  "slower than fp32)"),
                                           ("avx512_bf16", "(native bf16 on this CPU: avx512_bf16)")])
def test_amp_dtype_bfloat16_forces_bf16_on_any_cpu(cpu_with, feature, says):
    cpu_with(feature)
    dtype, line = precision.choose_dtype(True, "cpu", "bfloat16")
    assert dtype == torch.bfloat16 and line == "=> --amp-dtype bfloat16 on cpu: bf16 autocast " + says
    amp = precision.build_amp(True, "cpu", dtype="bfloat16", log=pytest.fail)
    with amp.autocast():
        assert nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("environ, cap", [
    ({}, None), ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),
    ({"DNNL_MAX_CPU_ISA": "avx512_core"}, "DNNL_MAX_CPU_ISA=avx512_core"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None), ({"ONEDNN_MAX_CPU_ISA": "avx512_core_amx"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "AVX10_1_512"}, None), ({"ONEDNN_MAX_CPU_ISA": "DEFAULT"}, None),
])
def test_onednn_isa_caps_that_keep_it_off_bf16(environ, cap):
    assert precision.onednn_cap_without_bf16(environ) == cap


@requires_torch("1.10", "CPU autocast")
def test_a_cpu_whose_bf16_onednn_may_not_use_trains_in_fp32(cpu_with, monkeypatch):
    cpu_with("avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN then emulates bf16 (tools/bench_precision.py)
    assert precision.choose_dtype(True, "cpu") == (None, (
        "=> --amp on cpu: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN off this CPU's native bf16 (avx512_bf16), training "
        "in fp32 (--amp-dtype bfloat16 forces bf16 autocast)"))
    assert precision.choose_dtype(True, "cpu", "bfloat16") == (torch.bfloat16, (
        "=> --amp-dtype bfloat16 on cpu: bf16 autocast although ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN off native "
        "bf16 (emulated, expect it slower than fp32)"))


def test_forced_bf16_on_a_torch_without_autocast_is_one_error(monkeypatch, cpu_with):
    cpu_with("amx_bf16")
    monkeypatch.delattr(torch, "autocast", raising=False)
    with pytest.raises(UserError, match=r"^--amp-dtype bfloat16 needs torch.autocast \(torch >= 1.10\)"):
        precision.choose_dtype(True, "cpu", "bfloat16")


def test_accelerators_keep_float16_unless_bfloat16_is_asked(cpu_with):
    cpu_with(None)  # the host CPU plays no part
    assert precision.choose_dtype(True, "cuda") == (torch.float16, None)
    assert precision.choose_dtype(True, "npu") == (torch.float16, None)
    assert precision.choose_dtype(False, "cpu") == (None, None)
    if hasattr(torch, "autocast"):
        assert precision.choose_dtype(True, "cuda", "bfloat16") == (torch.bfloat16, None)
        bf16 = precision.Amp(True, "cuda", dtype=torch.bfloat16)
        assert bf16.kind == "native-bfloat16" and bf16.scaler is None  # bf16 needs no loss scaling
    with pytest.raises(UserError, match="--amp-dtype must be one of auto, bfloat16"):
        precision.choose_dtype(True, "cpu", "float8")


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n", None),  # AVX-512 alone: bf16 is emulated
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", "avx512_bf16"),
    ("flags\t\t: fpu avx2 amx_tile amx_bf16 amx_int8\n", "amx_bf16"),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", "bf16"),  # Arm
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n", None),  # Kunpeng 920-like: no bf16
])
def test_cpuinfo_flags_of_native_bf16(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert precision._cpuinfo_bf16_flag(str(cpuinfo)) == expected


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert precision._cpuinfo_bf16_flag(str(tmp_path / "missing")) is None


def test_torchs_own_probe_comes_first_and_cpuinfo_is_the_fallback(monkeypatch):
    probes = type("FakeCpu", (), {"_is_amx_tile_supported": staticmethod(lambda: False),
                                  "_is_avx512_bf16_supported": staticmethod(lambda: True)})
    monkeypatch.setattr(torch, "cpu", probes, raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_bf16_flag", lambda: None)
    precision.native_bf16_feature.cache_clear()
    try:
        assert precision.native_bf16_feature() == "avx512_bf16"
        monkeypatch.setattr(torch, "cpu", object(), raising=False)  # a torch without the probes
        monkeypatch.setattr(precision, "_cpuinfo_bf16_flag", lambda: "bf16")
        precision.native_bf16_feature.cache_clear()
        assert precision.native_bf16_feature() == "bf16"
    finally:
        precision.native_bf16_feature.cache_clear()


def test_main_says_the_choice_once_and_trains(cpu_with, tmp_path, capsys):
    cpu_with(None)
    assert main.main(TINY + ["--amp", "--output-dir", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    expected = NO_NATIVE if hasattr(torch, "autocast") else "=> --amp on cpu: this torch {} has no CPU autocast " \
        "(torch >= 1.10), training in fp32".format(torch.__version__)
    assert stdout.count(expected) == 1 and " Epoch: [0][0/1]" in "\n".join(stdout)
    assert main.main(TINY + ["--output-dir", str(tmp_path)]) == 0  # no --amp: nothing to say
    assert not any(line.startswith("=> --amp") for line in capsys.readouterr().out.splitlines())


def test_amp_dtype_without_amp_is_one_error(tmp_path, capsys):
    assert main.main(TINY + ["--amp-dtype", "bfloat16", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --amp-dtype bfloat16 needs --amp"]
