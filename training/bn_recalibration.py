"""BatchNorm recalibration (`--bn-recalibrate N`), the last step of megvii's ShuffleNetV2 recipe: after training,
forget the running statistics and recompute them as a plain (cumulative) average over N training batches, with the
weights frozen (lr 0).
"""
import functools

import torch
import torch.distributed as dist
from torch import nn

from training.ema import unwrap_model
from training.errors import UserError


def batchnorm_layers(model):
    """All BatchNorm layers (1d/2d/3d/SyncBatchNorm) that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model, batches, prepare, num_batches):
    """Recompute BatchNorm running statistics over `num_batches` batches of `batches`; returns the batches used.

    The statistics are reset and accumulated as a cumulative average (momentum=None), the model runs in train mode
    under no_grad (weights untouched: lr 0), then momentum and every module's train/eval mode are restored.
    `prepare(batch)` turns one item of `batches` into the input tensor on the model's device.
    If the pass is interrupted (error, Ctrl-C) or sees no batch, the old statistics are put back.
    Under torch.distributed every rank runs its own batches and the per-rank statistics are then averaged, so that
    every rank evaluates and saves the same model.
    """
    num_batches = int(num_batches)
    if num_batches <= 0:
        raise UserError("--bn-recalibrate needs a positive number of batches, got {}".format(num_batches))
    # Run the bare module: DDP would broadcast rank 0's buffers before every forward and mix the ranks' passes.
    bare = unwrap_model(model)
    layers = batchnorm_layers(bare)
    if not layers:
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers]
    modes = [(m, m.training) for m in bare.modules()]
    used = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        bare.train()
        for batch in batches:
            if used >= num_batches:
                break
            bare(prepare(batch))
            used += 1
    except BaseException:
        _restore_stats(layers, saved)
        raise
    finally:
        for layer, (momentum, _, _, _) in zip(layers, saved):
            layer.momentum = momentum
        for module, training in modes:
            module.training = training
    if used == 0:
        _restore_stats(layers, saved)
        return 0
    _average_across_ranks(layers)
    return used


def _restore_stats(layers, saved):
    for layer, (_, mean, var, count) in zip(layers, saved):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
        layer.num_batches_tracked.copy_(count)


def _average_across_ranks(layers):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = float(dist.get_world_size())
    for layer in layers:
        for stat in (layer.running_mean, layer.running_var):
            dist.all_reduce(stat)
            stat.div_(world)


def recalibrate_models(modules, loader, *, preprocess, num_batches):
    """recalibrate_bn for each of `modules` (the model, its EMA) over the same training batches, prepared as
    for training (`preprocess(images, True)` on the modules' device); returns the batches used."""
    device = next(modules[0].parameters()).device
    prepare = functools.partial(_train_input, preprocess=preprocess, device=device)
    used = 0
    for module in modules:
        used = recalibrate_bn(module, loader, prepare, num_batches)
    return used


def _train_input(batch, preprocess, device):
    return preprocess(batch[0].to(device, non_blocking=True), True)
