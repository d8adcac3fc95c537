"""Device choice (npu / cuda / cpu), guarded torch_npu and apex imports, AMP and the SGD optimizer.

torch_npu fails at import on machines without the CANN toolkit (ImportError, OSError, even SystemExit), and
PyPI's `apex` is an unrelated package, so both are imported behind broad excepts and the reason is kept for the
error message. Everything here also runs on the torch 1.8 of Ascend images: newer APIs sit behind hasattr/try.
"""
import contextlib
import importlib
import importlib.util
import re
import sys
import warnings

import torch

from training.errors import UserError

DEVICE_CHOICES = ("auto", "npu", "cuda", "gpu", "cpu")
BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}

_IMPORTS = {}


def _guarded_import(name):
    """(module, None) or (None, reason). Cached: a failing import is tried once per process."""
    if name not in _IMPORTS:
        try:
            _IMPORTS[name] = (importlib.import_module(name), None)
        except BaseException as exc:  # torch_npu may raise OSError or call sys.exit without CANN
            if isinstance(exc, KeyboardInterrupt):
                raise
            _IMPORTS[name] = (None, _import_failure_reason(exc))
    return _IMPORTS[name]


def _import_failure_reason(exc):
    """One line: what failed, and for a missing shared library (CANN not installed / env_npu.sh not sourced) what
    to do about it."""
    text = " ".join(str(exc).split())
    library = re.search(r"(lib[\w.+-]*\.so[\w.]*)", text)
    if isinstance(exc, (ImportError, OSError)) and library and not isinstance(exc, ModuleNotFoundError):
        return "CANN libraries missing ({}): source test/env_npu.sh".format(library.group(1))
    return "{}: {}".format(type(exc).__name__, text).strip()


def _print_warning(message):
    print(message, file=sys.stderr, flush=True)


def _module_installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_torch_npu():
    """(torch_npu, None) when the NPU plug-in imports and sees a device, else (None, reason).

    Ascend's PyTorch 1.5.0 builds have no torch_npu package (the plug-in split came with 1.8.1): NPU support is
    built into torch there, so a `torch.npu` that already sees a device is used as is."""
    module, reason = _guarded_import("torch_npu")
    npu = getattr(torch, "npu", None)
    if module is None:
        if npu is not None and _npu_available(npu):
            return npu, None
        return None, reason
    if npu is None or not npu.is_available():
        return None, "torch_npu imported but no NPU is available"
    return module, None


def _npu_available(npu):
    try:
        return bool(npu.is_available())
    except Exception:  # a half-initialised built-in npu module: treat as absent
        return False


def import_apex():
    """(apex_amp, apex_optimizers_or_None, None) when Ascend/NVIDIA apex imports, else (None, None, reason)."""
    amp, reason = _guarded_import("apex.amp")
    if amp is None or not hasattr(amp, "initialize"):
        return None, None, reason or "the installed `apex` has no amp.initialize (PyPI's apex is unrelated)"
    optimizers, _ = _guarded_import("apex.optimizers")
    return amp, optimizers, None


def resolve_device_type(name, warn=_print_warning):
    """Map --device to 'npu', 'cuda' or 'cpu'; UserError when the asked device cannot be used (with the reason).

    'auto' falls back to cuda/cpu; when torch_npu is installed but unusable it says why with one `warn` line."""
    if name == "gpu":
        name = "cuda"
    if name not in DEVICE_CHOICES:
        raise UserError("unknown --device {!r}; choose one of {}".format(name, ", ".join(DEVICE_CHOICES)))
    if name == "npu":
        module, reason = import_torch_npu()
        if module is None:
            raise UserError("--device npu: torch_npu cannot be used ({})".format(reason))
        return "npu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch.cuda.is_available() is False (no GPU or a CPU-only torch)")
        return "cuda"
    if name == "cpu":
        return "cpu"
    module, reason = import_torch_npu()
    if module is not None:
        return "npu"
    fallback = "cuda" if torch.cuda.is_available() else "cpu"
    if _module_installed("torch_npu"):
        warn("warning: --device auto: torch_npu is installed but cannot be used ({}); using {}".format(
            reason, fallback))
    return fallback


def device_count(device_type):
    """Number of accelerators of this type on the node (CPU: 1)."""
    if device_type == "npu":
        return torch.npu.device_count()
    if device_type == "cuda":
        return torch.cuda.device_count()
    return 1


VISIBLE_ENV = {"npu": "ASCEND_RT_VISIBLE_DEVICES", "cuda": "CUDA_VISIBLE_DEVICES"}


def set_device(device_type, index):
    """Select accelerator `index` for this process; returns the torch.device to put tensors on.

    Indices count the visible devices from 0: with ASCEND_RT_VISIBLE_DEVICES=4,5 (or CUDA_VISIBLE_DEVICES) device 4
    is index 0, so an index past the visible count is a UserError here rather than a driver error later."""
    if device_type in VISIBLE_ENV:
        count = device_count(device_type)
        if not 0 <= index < count:
            raise UserError("{} device index {} does not exist: {} visible device(s), indices 0..{} (with {} set, "
                            "index 0 is its first entry)".format(device_type, index, count, count - 1,
                                                                 VISIBLE_ENV[device_type]))
    if device_type == "npu":
        torch.npu.set_device(index)
        return torch.device("npu:{}".format(index))
    if device_type == "cuda":
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def default_backend(device_type):
    """hccl on NPU, nccl on CUDA, gloo on CPU."""
    return BACKENDS[device_type]


def parameter_groups(model, weight_decay, norm_weight_decay=None, bias_weight_decay=None):
    """SGD groups: normalization-layer parameters and biases may get their own weight decay (None: same as wd)."""
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    decays = {
        "other": weight_decay,
        "norm": weight_decay if norm_weight_decay is None else norm_weight_decay,
        "bias": weight_decay if bias_weight_decay is None else bias_weight_decay,
    }
    params = {"other": [], "norm": [], "bias": []}
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, norm_types):
                params["norm"].append(param)
            elif name == "bias":
                params["bias"].append(param)
            else:
                params["other"].append(param)
    # Merge groups with equal decay so the default case is one group (and apex's fused SGD stays simple).
    by_decay = {}
    for key in ("other", "norm", "bias"):
        if params[key]:
            by_decay.setdefault(decays[key], []).extend(params[key])
    return [{"params": p, "weight_decay": wd} for wd, p in by_decay.items()]


def build_optimizer(model, lr, momentum, weight_decay, norm_weight_decay=None, bias_weight_decay=None,
                    apex_optimizers=None, device_type="cpu"):
    """SGD over the weight-decay groups; apex's NpuFusedSGD on NPU when apex provides it."""
    groups = parameter_groups(model, weight_decay, norm_weight_decay, bias_weight_decay)
    sgd = torch.optim.SGD
    if device_type == "npu" and apex_optimizers is not None and hasattr(apex_optimizers, "NpuFusedSGD"):
        sgd = apex_optimizers.NpuFusedSGD
    return sgd(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


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

    def __init__(self, enabled, device_type, opt_level="O2", loss_scale=None, apex_amp=None, apex_optimizers=None):
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
        warnings.warn("this torch has no CPU autocast: --amp runs in float32 on the CPU", stacklevel=2)
        return contextlib.nullcontext()

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


def build_amp(enabled, device_type, opt_level="O2", loss_scale=None, log=print):
    """The Amp for these flags: apex when it imports and the device is npu/cuda, else native autocast, with a
    warning when apex is absent (the ModelZoo flags ask for it)."""
    if opt_level not in ("O0", "O1", "O2", "O3"):
        raise UserError("--opt-level must be O0, O1, O2 or O3, got {!r}".format(opt_level))
    apex_amp = apex_optimizers = None
    if enabled:
        apex_amp, apex_optimizers, reason = import_apex()
        if apex_amp is None:
            log("warning: --amp: apex is not available ({}); using native torch AMP".format(reason))
        elif device_type == "cpu":
            log("note: --amp on CPU uses native bfloat16 autocast (apex amp needs npu or cuda)")
    return Amp(enabled, device_type, opt_level, loss_scale, apex_amp, apex_optimizers)
