"""What the installed torch can do: one feature test per capability that older torch releases lack (the torch
1.5, 1.8, 1.11 and 2.1 of Ascend's images), by signature, attribute or a tiny trial, never by version string.
Callers ask here, so each guard lives in one place; `needs(feature, version)` words the error when a feature cannot
exist on this torch.
"""
import functools
import importlib.util
import inspect
import io
import pickle
import warnings

import torch
from torch.utils.data import DataLoader


def _accepts(function, name):
    return name in inspect.signature(function).parameters


def needs(feature, version):
    """The one-line reason for a feature this torch lacks: "<feature> needs torch >= <version> (this is ...)"."""
    return "{} needs torch >= {} (this is torch {})".format(feature, version, torch.__version__)


def loader_worker_options(workers):
    """DataLoader keywords that keep worker processes between epochs (persistent_workers, torch >= 1.7); older
    torch starts the workers again every epoch, which changes speed, never the batches."""
    if workers > 0 and _accepts(DataLoader.__init__, "persistent_workers"):
        return {"persistent_workers": True}
    return {}


def has_non_persistent_buffers():
    """register_buffer(persistent=False), torch >= 1.6."""
    return _accepts(torch.nn.Module.register_buffer, "persistent")


def hub_dir():
    """The folder torch.hub.set_dir sets, whose checkpoints/ holds the weights torchvision downloads:
    torch.hub.get_dir() (torch >= 1.6); before it, the torch home (torch 1.5 downloads into
    $TORCH_HOME/checkpoints, and set_dir replaces that torch home)."""
    if hasattr(torch.hub, "get_dir"):
        return torch.hub.get_dir()
    return torch.hub._get_torch_home()


@functools.lru_cache(maxsize=None)
def _equal_handles(dtype):
    try:
        torch.equal(torch.zeros(1, dtype=dtype), torch.zeros(1, dtype=dtype))
    except RuntimeError:  # torch 1.5: "_th_equal not supported on CPUType for Half"
        return False
    return True


def tensors_equal(first, second):
    """torch.equal, also for float16 CPU tensors where this torch's torch.equal has no kernel for them (compared
    as float32, which holds every float16 value exactly)."""
    if first.device.type == "cpu" and not _equal_handles(first.dtype):
        return torch.equal(first.float(), second.float())
    return torch.equal(first, second)


@functools.lru_cache(maxsize=None)
def weights_only_load_takes_plain_values():
    """torch.load(weights_only=True) exists (torch >= 1.13) and loads a tensor and the plain values besides tensors
    that a checkpoint may hold (sets, complex numbers, bytes) without a word. torch 2.1's refuses all three, and
    warns "TypedStorage is deprecated" at the first tensor it loads."""
    if not _accepts(torch.load, "weights_only"):
        return False
    buffer = io.BytesIO()
    torch.save({"tensor": torch.zeros(1), "set": {1}, "complex": 1j, "bytes": b"\x00"}, buffer)
    buffer.seek(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.load(buffer, weights_only=True)
        except pickle.UnpicklingError:
            return False
    return not caught


def has_cpu_autocast():
    """torch.autocast, which brings CPU (bfloat16) autocast: torch >= 1.10."""
    return hasattr(torch, "autocast")


def onnx_export_folds_batchnorm():
    """The ONNX exporter folds eval-mode BatchNorm into the convolution before it (its eval peephole pass, torch >=
    1.6); torch 1.5 writes BatchNormalization nodes."""
    return hasattr(torch._C, "_jit_pass_onnx_eval_peephole")


def newest_onnx_opset():
    """The newest ONNX opset this torch's TorchScript exporter writes: the limit torch >= 2.0 states, else its
    newest torch.onnx.symbolic_opsetN module (12 on torch 1.5, 13 on torch 1.8); None where there is neither (its
    exporter then decides)."""
    if importlib.util.find_spec("torch.onnx._constants") is not None:
        stated = getattr(importlib.import_module("torch.onnx._constants"), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None)
        if stated is not None:
            return stated
    newest, opset = None, 7
    while importlib.util.find_spec("torch.onnx.symbolic_opset{}".format(opset)) is not None:
        newest, opset = opset, opset + 1
    return newest
