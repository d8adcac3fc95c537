"""Numeric precision: where AMP is chosen. One `Amp` object hides the four cases

- apex amp (Ascend or NVIDIA apex, `--amp` on npu/cuda when apex imports; O1/O2 with NpuFusedSGD on NPU),
- native fp16 autocast + GradScaler (`--amp` on npu/cuda without apex),
- native bf16 autocast (`--amp` on a CPU with bf16 arithmetic in hardware, or `--amp-dtype bfloat16` anywhere),
- fp32 (no `--amp`, or `--amp` on a CPU without native bf16: emulated bf16 is many times slower than fp32 there).

Everything here also runs on the torch 1.5 and 1.8 of Ascend images: newer APIs sit behind hasattr/try and
training/compat.py.
"""
import contextlib
import functools
import os

import torch

from training import compat
from training import device as devices
from training.errors import UserError


def _parse_loss_scale(value):
    """--loss-scale: a number (static) or -1 / 'dynamic' (dynamic); None when not given."""
    if value is None:
        return None
    if str(value).lower() == "dynamic":
        return "dynamic"
    try:
        number = float(value)
    except ValueError:
        raise UserError("--loss-scale must be a number or -1 for dynamic, got {!r}".format(value)) from None
    if number == -1:
        return "dynamic"
    if number <= 0:
        raise UserError("--loss-scale must be positive (or -1 for dynamic), got {!r}".format(value))
    return number


class Amp:
    """Mixed precision behind one interface: apex amp, native autocast (+ GradScaler) or nothing.

    `model, optimizer = amp.prepare(model, optimizer)` once; per step `with amp.autocast(): loss = ...`, then
    `amp.backward(loss, optimizer)` and `amp.step(optimizer)`. `state_dict()` goes into checkpoints.
    """

    def __init__(self, enabled, device_type, *, opt_level="O2", loss_scale=None, apex_amp=None,
                 apex_optimizers=None, dtype=None):
        """`dtype`: the native autocast dtype (default: bfloat16 on a CPU, float16 elsewhere); bfloat16 needs no
        GradScaler."""
        self.enabled = bool(enabled)
        self.device_type = device_type
        self.opt_level = opt_level
        self.loss_scale = _parse_loss_scale(loss_scale)
        self.apex_amp = apex_amp if (self.enabled and device_type in ("npu", "cuda")) else None
        # Ascend apex's fused optimizers refuse to step unless amp.initialize has run, and support O1/O2 only
        # (apex/optimizers/npu_fused_sgd.py): pass them to build_optimizer only in that case.
        self.apex_optimizers = None
        if self.apex_amp is not None and device_type == "npu" and opt_level in ("O1", "O2"):
            self.apex_optimizers = apex_optimizers
        self.scaler = None
        self.dtype = None
        if self.enabled and self.apex_amp is None:
            self.dtype = dtype or (torch.bfloat16 if device_type == "cpu" else torch.float16)
            if self.dtype == torch.float16:
                self.scaler = self._native_scaler()

    @property
    def kind(self):
        if not self.enabled:
            return "off"
        return "apex" if self.apex_amp is not None else "native-{}".format(str(self.dtype).replace("torch.", ""))

    def _native_scaler(self):
        """GradScaler; a static --loss-scale starts there and never grows (overflowing steps are still skipped).

        On NPU torch_npu's own torch.npu.amp.GradScaler comes first: it is the documented NPU form of the CUDA
        scaler on every torch_npu release, and it knows the NPU-only parts (the float-status overflow flag of
        Atlas training chips without inf/nan mode, fused optimizers' combined gradients) that the generic
        torch.amp.GradScaler("npu") of torch >= 2.3 does not."""
        kwargs = {}
        if isinstance(self.loss_scale, float):
            kwargs = {"init_scale": self.loss_scale, "growth_interval": 2 ** 30}
        if self.device_type == "npu":
            npu_amp = getattr(getattr(torch, "npu", None), "amp", None)
            if npu_amp is not None and hasattr(npu_amp, "GradScaler"):
                return npu_amp.GradScaler(**kwargs)
        if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
            try:
                return torch.amp.GradScaler(self.device_type, **kwargs)
            except TypeError:
                pass
        return torch.cuda.amp.GradScaler(**kwargs)

    def prepare(self, model, optimizer):
        """apex: amp.initialize (combine_grad on NPU). Native: nothing to do."""
        if self.apex_amp is None:
            return model, optimizer
        kwargs = {"opt_level": self.opt_level,
                  "loss_scale": self.loss_scale if self.loss_scale is not None else "dynamic"}
        if self.device_type == "npu":
            kwargs["combine_grad"] = True
        return self.apex_amp.initialize(model, optimizer, **kwargs)

    def autocast(self):
        """Context for the forward pass (a no-op for apex, which casts the model itself, and without --amp)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        if hasattr(torch, "autocast"):
            # torch >= 2.1 accepts "npu" natively and torch_npu 1.11 patches torch.autocast to accept it; a torch
            # that still refuses the device type (RuntimeError) falls through to torch.npu.amp.autocast below.
            try:
                return torch.autocast(device_type=self.device_type, dtype=self.dtype)
            except RuntimeError:
                if self.device_type != "npu":
                    raise
        if self.device_type == "cuda":
            return torch.cuda.amp.autocast()
        if self.device_type == "npu":
            return torch.npu.amp.autocast()
        raise UserError(amp_refusal(self.device_type))

    def backward(self, loss, optimizer):
        if self.apex_amp is not None:
            with self.apex_amp.scale_loss(loss, optimizer) as scaled:
                scaled.backward()
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer):
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self):
        if self.apex_amp is not None:
            return self.apex_amp.state_dict()
        if self.scaler is not None:
            return self.scaler.state_dict()
        return None

    def load_state_dict(self, state):
        if not state:
            return
        if self.apex_amp is not None:
            self.apex_amp.load_state_dict(state)
        elif self.scaler is not None:
            self.scaler.load_state_dict(state)


AMP_DTYPES = ("auto", "bfloat16")  # main.py --amp-dtype
# Linux /proc/cpuinfo flags of bf16 arithmetic in hardware: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# torch's own probes (private, torch >= 2.3; absent before): the CPU feature each one detects.
TORCH_BF16_PROBES = (("_is_amx_tile_supported", "amx_bf16"), ("_is_avx512_bf16_supported", "avx512_bf16"))


@functools.lru_cache(maxsize=None)
def native_bf16_feature():
    """The CPU feature that does bf16 arithmetic in hardware ('avx512_bf16', 'amx_bf16', Arm's 'bf16'), or None
    when neither torch nor /proc/cpuinfo reports one (oneDNN then emulates bf16, many times slower than fp32)."""
    cpu = getattr(torch, "cpu", None)
    for probe, feature in TORCH_BF16_PROBES:
        try:
            if getattr(cpu, probe)():
                return feature
        except Exception:  # an older torch without the probe, or one that fails on this platform
            continue
    return _cpuinfo_bf16_flag()


def _cpuinfo_bf16_flag(path="/proc/cpuinfo"):
    """The first NATIVE_BF16_FLAGS entry on the first `flags` (x86) or `Features` (Arm) line of `path`, or None
    (also where the file does not exist: macOS, Windows)."""
    try:
        with open(path) as stream:
            for line in stream:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("flags", "features"):
                    present = set(value.split())
                    return next((flag for flag in NATIVE_BF16_FLAGS if flag in present), None)
    except OSError:
        pass
    return None


# oneDNN's documented cap on the instructions it uses (ONEDNN_MAX_CPU_ISA, DNNL_MAX_CPU_ISA before oneDNN 2.0): capped
# below AVX512_CORE_BF16 it emulates bf16 even on a CPU that has it. Caps whose names contain one of these words
# include bf16 arithmetic (AVX512_CORE_FP16 and AVX10 are supersets of AVX512_CORE_BF16).
ONEDNN_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
ONEDNN_BF16_ISA_WORDS = ("BF16", "AMX", "FP16", "AVX10", "ALL", "DEFAULT")


def onednn_cap_without_bf16(environ=None):
    """'ONEDNN_MAX_CPU_ISA=AVX2' when that variable keeps oneDNN below the CPU's bf16 instructions, else None."""
    environ = os.environ if environ is None else environ
    for name in ONEDNN_ISA_ENV:
        value = environ.get(name, "").strip()
        if value:
            if any(word in value.upper() for word in ONEDNN_BF16_ISA_WORDS):
                return None
            return "{}={}".format(name, value)
    return None


def choose_dtype(enabled, device_type, requested="auto"):
    """(autocast dtype or None for fp32, a line saying what a CPU run gets and why, or None).

    npu/cuda: float16 (apex or native, build_amp decides) unless `requested` is "bfloat16". CPU: bfloat16 where the
    CPU does bf16 in hardware, else fp32; `requested` "bfloat16" forces bf16 autocast either way. A torch without
    the autocast that this needs is a UserError for a forced bf16, fp32 with the line for the automatic choice."""
    if not enabled:
        return None, None
    if requested not in AMP_DTYPES:
        raise UserError("--amp-dtype must be one of {}, got {!r}".format(", ".join(AMP_DTYPES), requested))
    has_autocast = hasattr(torch, "autocast")  # torch >= 1.10: CPU autocast, and bf16 on any device
    if requested == "bfloat16":
        if not has_autocast:
            raise UserError("--amp-dtype bfloat16 needs torch.autocast (torch >= 1.10); this torch is {}".format(
                torch.__version__))
        return torch.bfloat16, _forced_bf16_note(device_type)
    if device_type != "cpu":
        return torch.float16, None
    if not has_autocast:
        return None, "=> --amp on cpu: this torch {} has no CPU autocast (torch >= 1.10), training in fp32".format(
            torch.__version__)
    feature = native_bf16_feature()
    if feature is None:
        return None, ("=> --amp on cpu: this CPU has no native bf16 (avx512_bf16/amx_bf16), training in fp32 "
                      "(--amp-dtype bfloat16 forces bf16 autocast)")
    cap = onednn_cap_without_bf16()
    if cap:
        return None, ("=> --amp on cpu: {} keeps oneDNN off this CPU's native bf16 ({}), training in fp32 "
                      "(--amp-dtype bfloat16 forces bf16 autocast)".format(cap, feature))
    return torch.bfloat16, "=> --amp on cpu: bf16 autocast (native bf16 on this CPU: {})".format(feature)


def _forced_bf16_note(device_type):
    if device_type != "cpu":
        return None
    feature, cap = native_bf16_feature(), onednn_cap_without_bf16()
    if feature is None or cap:
        why = "this CPU has no native bf16" if feature is None else "{} keeps oneDNN off native bf16".format(cap)
        return "=> --amp-dtype bfloat16 on cpu: bf16 autocast although {} (emulated, expect it slower than " \
               "fp32)".format(why)
    return "=> --amp-dtype bfloat16 on cpu: bf16 autocast (native bf16 on this CPU: {})".format(feature)


def build_amp(enabled, device_type, opt_level="O2", loss_scale=None, *, dtype="auto", log=print):
    """The Amp for these flags (`dtype`: --amp-dtype; choose_dtype says what a CPU gets, main.py prints its line):
    apex when it imports, the device is npu/cuda and the dtype float16, else native autocast, with a warning when
    apex is absent on npu/cuda (the ModelZoo flags ask for it); fp32 on a CPU without native bf16. On a CPU apex
    never applies: it is not imported and nothing warns about it."""
    if opt_level not in ("O0", "O1", "O2", "O3"):
        raise UserError("--opt-level must be O0, O1, O2 or O3, got {!r}".format(opt_level))
    autocast_dtype = choose_dtype(enabled, device_type, dtype)[0]
    apex_amp = apex_optimizers = None
    if autocast_dtype == torch.float16:
        apex_amp, apex_optimizers, reason = devices.import_apex()
        if apex_amp is None:
            log("warning: --amp: apex is not available ({}); using native torch AMP".format(reason))
    return Amp(autocast_dtype is not None, device_type, opt_level=opt_level, loss_scale=loss_scale,
               apex_amp=apex_amp, apex_optimizers=apex_optimizers, dtype=autocast_dtype)


def check_flags(enabled, device_type, opt_level="O2", loss_scale=None, amp_dtype="auto"):
    """UserError for a bad --opt-level or --loss-scale, or for an --amp-dtype this torch cannot run (main.py asks
    before any process starts). `--amp` alone never fails: where bf16 cannot run it trains in fp32 and says so."""
    if opt_level not in ("O0", "O1", "O2", "O3"):
        raise UserError("--opt-level must be O0, O1, O2 or O3, got {!r}".format(opt_level))
    _parse_loss_scale(loss_scale)
    choose_dtype(enabled, device_type, amp_dtype)


def amp_refusal(device_type):
    """Why bf16 autocast on `device_type` cannot run with this torch (one line), else None: CPU autocast came with
    torch.autocast in torch 1.10. The launcher asks it before it forces bf16 on a CPU."""
    if device_type == "cpu" and not compat.has_cpu_autocast():
        return compat.needs("bf16 autocast on the CPU", "1.10")
    return None


# ----------------------------------------------------------------------------------------------------------
# --compile: torch.compile of the module that trains (after DDP wraps it, as torch's DDP notes advise); the
# uncompiled model stays what checkpoints, EMA, validation and BN recalibration use.

DEFAULT_COMPILE_BACKEND = "inductor"


def check_available():
    """UserError on a torch without torch.compile (torch 1.x, e.g. the torch 1.8 of older Ascend images)."""
    if not hasattr(torch, "compile"):
        raise UserError("--compile needs torch.compile (torch >= 2.0); this torch is {}".format(torch.__version__))


def compile_model(module, backend=DEFAULT_COMPILE_BACKEND):
    """torch.compile(module, backend=backend): compiled lazily at the first step."""
    check_available()
    return torch.compile(module, backend=backend)
