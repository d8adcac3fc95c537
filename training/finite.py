"""Non-finite values stop a run before they reach a checkpoint.

A diverging run (too high a --lr) turns its loss into inf or NaN and then its weights; left alone it trains on
for every epoch and saves NaN weights as `checkpoint` and `model_best`. The train loop keeps its loss on the device
and checks it only where the value is read anyway (a printed step line, the epoch's all-reduced mean), so there is
no host sync per step; the weights are checked once per epoch, before any checkpoint file is written. Both raise a
NonFinite error: one `error:` line naming the epoch, the step and the value, and exit status 2 (EXIT_USER_ERROR:
the cure is a flag, a lower --lr).
"""
import math

import torch

from training.errors import UserError


class NonFinite(UserError):
    """The loss or the weights hold inf / NaN: the run stops with this one-line message."""


def check_loss(loss, *, epoch, step, base_lr):
    """Raise NonFinite when `loss` (a float already on the host: a step line's loss or the epoch mean up to
    `step`) is inf or NaN."""
    if not math.isfinite(loss):
        raise NonFinite("the training loss became {} by epoch {}, step {}: training diverged; restart with a lower "
                        "--lr (this run: {:g})".format(loss, epoch, step, base_lr))


def first_non_finite(state_dict):
    """Name of the first floating-point tensor of `state_dict` that holds inf or NaN, else None (one host sync)."""
    named = [(name, value) for name, value in state_dict.items()
             if torch.is_tensor(value) and value.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(value).all() for _, value in named]).cpu().tolist()
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    return bad[0] if bad else None


def check_weights(modules, *, epochs_done, base_lr):
    """Raise NonFinite when a module of `modules` (the model, its EMA) holds inf or NaN after `epochs_done`
    epochs; called before the checkpoint saver writes, so no file receives such weights."""
    for module in modules:
        name = first_non_finite(module.state_dict())
        if name is not None:
            raise NonFinite("the weights hold inf or NaN after {} epoch(s) ({}): not saved, the checkpoints on disk "
                            "are from earlier epochs; restart with a lower --lr (this run: {:g})".format(
                                epochs_done, name, base_lr))
