"""Fake apex.optimizers.NpuFusedSGD: torch's SGD that records its construction."""
import torch

from apex import CALLS


class NpuFusedSGD(torch.optim.SGD):
    def __init__(self, params, lr, momentum=0, weight_decay=0, **kwargs):
        CALLS.append(("NpuFusedSGD", {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}))
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
