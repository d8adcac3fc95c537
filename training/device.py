"""Device choice (npu / cuda / cpu) and the guarded imports of the vendor plug-ins (torch_npu, apex).

torch_npu fails at import on machines without the CANN toolkit (ImportError, OSError, even SystemExit), and
PyPI's `apex` is an unrelated package, so both are imported behind broad excepts and the reason is kept for the
error message. Everything here also runs on the torch 1.8 of Ascend images: newer APIs sit behind hasattr/try.
"""
import importlib
import importlib.util
import re
import sys

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
