"""Fake apex.optimizers.NpuFusedSGD: torch's SGD that records its construction.

Like Ascend apex (src/apex/optimizers/npu_fused_sgd.py): the constructor is (params, lr, momentum=0,
dampening=0, weight_decay=0, nesterov=False), and step() raises unless amp.initialize has prepared it."""
import torch

from apex import CALLS


class NpuFusedSGD(torch.optim.SGD):
    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        CALLS.append(("NpuFusedSGD", {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}))
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

    def step(self, closure=None):
        if not hasattr(self, "_amp_stash"):
            raise RuntimeError("apex.optimizers.NpuFusedSGD should be used with AMP.")
        return super().step(closure)
