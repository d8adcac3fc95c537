"""What the installed torch can do: one feature test per capability that older torch releases lack (the torch
1.5, 1.8 and 1.11 of older Ascend images), by signature or attribute, never by version string. Callers ask here,
so each guard lives in one place; `needs(feature, version)` words the error when a feature cannot exist.
"""
import functools
import importlib.util
import inspect

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


def has_cpu_autocast():
    """torch.autocast, which brings CPU (bfloat16) autocast: torch >= 1.10."""
    return hasattr(torch, "autocast")


def onnx_export_folds_batchnorm():
    """The ONNX exporter folds eval-mode BatchNorm into the convolution before it (its eval peephole pass, torch >=
    1.6); torch 1.5 writes BatchNormalization nodes."""
    return hasattr(torch._C, "_jit_pass_onnx_eval_peephole")


def newest_onnx_opset():
    """The newest ONNX opset this torch's TorchScript exporter writes (its torch.onnx.symbolic_opsetN modules): 12
    on torch 1.5, 13 from torch 1.8; None where torch.onnx has no such modules (its exporter then decides)."""
    newest, opset = None, 7
    while importlib.util.find_spec("torch.onnx.symbolic_opset{}".format(opset)) is not None:
        newest, opset = opset, opset + 1
    return newest
