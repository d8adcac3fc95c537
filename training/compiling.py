"""`--compile`: torch.compile of the training forward/backward (torch >= 2.0).

Only the module that trains is compiled (after DistributedDataParallel wraps it, as torch's DDP notes advise). The
uncompiled model stays what everything else uses: checkpoints (`state_dict` keys without `_orig_mod.`, so
torchvision loads them), the EMA copy, validation and BatchNorm recalibration.
"""
import torch

from training.errors import UserError

DEFAULT_BACKEND = "inductor"


def check_available():
    """UserError on a torch without torch.compile (torch 1.x, e.g. the torch 1.8 of older Ascend images)."""
    if not hasattr(torch, "compile"):
        raise UserError("--compile needs torch.compile (torch >= 2.0); this torch is {}".format(torch.__version__))


def compile_model(module, backend=DEFAULT_BACKEND):
    """torch.compile(module, backend=backend): compiled lazily at the first step."""
    check_available()
    return torch.compile(module, backend=backend)
