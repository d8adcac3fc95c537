"""Fake torch_npu: importing it installs a recording `torch.npu` namespace, as the real plug-in does."""
import types

import torch

CALLS = []
DEVICE_COUNT = 8


def _record(name):
    def call(*args, **kwargs):
        CALLS.append((name, args, kwargs))
    return call


npu = types.SimpleNamespace(
    is_available=lambda: True,
    device_count=lambda: DEVICE_COUNT,
    set_device=_record("set_device"),
    synchronize=_record("synchronize"),
)
torch.npu = npu
