"""Fake torch_npu: importing it installs a recording `torch.npu` namespace, as the real plug-in does.

Names and signatures follow torch_npu (Ascend/pytorch, torch_npu/npu/utils.py and torch_npu/npu/amp/):
set_device(int | "npu:N" | torch.device), synchronize(device=None), amp.GradScaler(init_scale=2.**16,
growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, dynamic=True, enabled=True), amp.autocast(...)."""
import contextlib
import types

import torch

CALLS = []
DEVICE_COUNT = 8


def _record(name):
    def call(*args, **kwargs):
        CALLS.append((name, args, kwargs))
    return call


class GradScaler:
    """Records its construction; only the arguments torch_npu's GradScaler accepts are allowed."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 dynamic=True, enabled=True):
        self.init_scale = init_scale
        self.growth_interval = growth_interval
        CALLS.append(("GradScaler", (), {"init_scale": init_scale, "growth_interval": growth_interval}))


@contextlib.contextmanager
def autocast(enabled=True, dtype=None, cache_enabled=True):
    CALLS.append(("autocast", (), {"enabled": enabled, "dtype": dtype}))
    yield


npu = types.SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: DEVICE_COUNT,
    set_device=_record("set_device"),
    synchronize=_record("synchronize"),
    amp=types.SimpleNamespace(GradScaler=GradScaler, autocast=autocast),
)
torch.npu = npu
