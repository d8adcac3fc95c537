"""The optimizer and the learning rate: SGD over weight-decay groups, the per-iteration LR schedule and gradient
accumulation (ModelZoo's `--benchmark 1`).

The LR changes every iteration (the original changes it once per epoch): linear warm-up, then cosine (the ModelZoo
original) or linear (the paper) to 0. Per iteration removes the jump at each epoch boundary and makes the schedule
independent of how many epochs a run is split into (resume gives the same LRs).
"""
import math

import torch

SCHEDULES = ("cosine", "linear")


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


def build_optimizer(model, *, lr, momentum, weight_decay, norm_weight_decay=None, bias_weight_decay=None,
                    apex_optimizers=None, device_type="cpu"):
    """SGD over the weight-decay groups; apex's NpuFusedSGD on NPU when apex provides it (precision.Amp says when:
    `amp.apex_optimizers`)."""
    groups = parameter_groups(model, weight_decay, norm_weight_decay, bias_weight_decay)
    sgd = torch.optim.SGD
    if device_type == "npu" and apex_optimizers is not None and hasattr(apex_optimizers, "NpuFusedSGD"):
        sgd = apex_optimizers.NpuFusedSGD
    return sgd(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def gradient_accumulation_steps(args):
    """Micro-batches per optimizer step: --optimizer-batch-size / --batch-size with ModelZoo's `--benchmark 1`
    (the original's name for gradient accumulation), else 1."""
    return args.optimizer_batch_size // args.batch_size if args.benchmark == 1 else 1


def lr_at(step, base_lr, total_steps, warmup_steps=0, schedule="cosine"):
    """LR for iteration `step` (0-based) of `total_steps`.

    Warm-up: base_lr * (step + 1) / warmup_steps for the first `warmup_steps` iterations (never 0).
    Then progress p runs from 0 to 1 over the remaining iterations: cosine base_lr * (1 + cos(pi p)) / 2,
    linear base_lr * (1 - p).
    """
    if schedule not in SCHEDULES:
        raise ValueError("unknown LR schedule {!r}; choose one of {}".format(schedule, ", ".join(SCHEDULES)))
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (1.0 - progress)


class LrSchedule:
    """Sets the LR of every parameter group for a global iteration (epoch * steps_per_epoch + step)."""

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs=0, schedule="cosine"):
        self.base_lr = base_lr
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.schedule = schedule
        lr_at(0, base_lr, self.total_steps, self.warmup_steps, schedule)  # validate the name now

    def lr(self, epoch, step):
        return lr_at(epoch * self.steps_per_epoch + step, self.base_lr, self.total_steps, self.warmup_steps,
                     self.schedule)

    def apply(self, optimizer, epoch, step):
        value = self.lr(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = value
        return value
