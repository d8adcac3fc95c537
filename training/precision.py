"""Numeric precision: where AMP is chosen. One `Amp` object hides the four cases

- apex amp (Ascend or NVIDIA apex, `--amp` on npu/cuda when apex imports; O1/O2 with NpuFusedSGD on NPU),
- native fp16 autocast + GradScaler (`--amp` on npu/cuda without apex),
- native bf16 autocast (`--amp` on cpu; torch >= 1.10, older torch refuses `--amp` on the CPU in one line),
- fp32 (no `--amp`).

Everything here also runs on the torch 1.5 and 1.8 of Ascend images: newer APIs sit behind hasattr/try and
training/compat.py.
"""
import contextlib

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
                 apex_optimizers=None):
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
            self.dtype = torch.bfloat16 if device_type == "cpu" else torch.float16
            if device_type != "cpu":
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


def build_amp(enabled, device_type, opt_level="O2", loss_scale=None, *, log=print):
    """The Amp for these flags: apex when it imports and the device is npu/cuda, else native autocast, with a
    warning when apex is absent on npu/cuda (the ModelZoo flags ask for it). On a CPU apex never applies: it is not
    imported and nothing warns about it."""
    check_flags(enabled, device_type, opt_level, loss_scale)
    apex_amp = apex_optimizers = None
    if enabled and device_type == "cpu":
        log("note: --amp on CPU: native bfloat16 autocast")
    elif enabled:
        apex_amp, apex_optimizers, reason = devices.import_apex()
        if apex_amp is None:
            log("warning: --amp: apex is not available ({}); using native torch AMP".format(reason))
    return Amp(enabled, device_type, opt_level=opt_level, loss_scale=loss_scale, apex_amp=apex_amp,
               apex_optimizers=apex_optimizers)


def check_flags(enabled, device_type, opt_level="O2", loss_scale=None):
    """UserError for a bad --opt-level or --loss-scale, or for --amp where this torch cannot run it on
    `device_type` (main.py asks before any process starts)."""
    if opt_level not in ("O0", "O1", "O2", "O3"):
        raise UserError("--opt-level must be O0, O1, O2 or O3, got {!r}".format(opt_level))
    _parse_loss_scale(loss_scale)
    refusal = amp_refusal(device_type) if enabled else None
    if refusal:
        raise UserError(refusal)


def amp_refusal(device_type):
    """Why `--amp` cannot run on `device_type` with this torch (one line), else None: CPU autocast came with
    torch.autocast in torch 1.10."""
    if device_type == "cpu" and not compat.has_cpu_autocast():
        return compat.needs("--amp on the CPU (bfloat16 autocast)", "1.10")
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
