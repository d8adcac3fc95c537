"""Weight EMA (`--model-ema`).

ModelEma keeps an exponential moving average of a model's weights in a separate copy that is evaluated and
checkpointed beside the model. After every optimizer step, `update(model)` does, for every state_dict entry
(non-persistent buffers such as the channel shuffle's index tables are constants and left alone):

    floating parameters and floating buffers (BN running_mean / running_var):  ema = decay * ema + (1 - decay) * value
    integer buffers (BN num_batches_tracked):                                  ema = value (copied)

Averaging the BN statistics too (rather than copying the model's) keeps them consistent with the averaged weights
as far as an average can; training/bn_recalibration.py recomputes them exactly at the end of training when asked.

The update is one fused multi-tensor operation where torch has one (`_foreach_lerp_`, else `_foreach_mul_` +
`_foreach_add_`), not ~300 small ones per step; lerp also leaves a constant weight exactly constant.

Half-precision weights (apex O2 on Ascend keeps conv/linear weights in float16) cannot absorb updates of
(1 - 0.9999) x value: they are below float16's resolution and the average would never move. So the average of
every tensor that is not float32/float64 is accumulated in a float32 "shadow" and copied (rounded) into `.module`.
"""
import copy

import torch
from torch import nn

from training import compat
from training.checkpoints.checkpoint import strip_module_prefix
from training.errors import UserError


def unwrap_model(model):
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class ModelEma:
    """Exponential moving average of a model's weights; `.module` is the averaged copy (eval mode, no grads)."""

    def __init__(self, model, decay=0.9999):
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise UserError("--model-ema decay must be between 0 and 1 (exclusive), got {}".format(decay))
        self.decay = decay
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        # The work of one update, planned once by position in _tensors() order: averaged, copied, or skipped
        # (non-persistent buffers such as the channel shuffle's index tables are constants).
        persistent = set(self.module.state_dict())
        # _average: (index, float32 shadow or None); the shadows accumulate the low-precision floating entries
        # (see the module docstring) and are also kept by name for state_dict / load_state_dict.
        self._average, self._copy = [], []
        self._shadow = {}
        for index, (name, tensor) in enumerate(_named_tensors(self.module)):
            if name not in persistent:
                continue
            if tensor.is_floating_point():
                shadow = None
                if tensor.dtype not in (torch.float32, torch.float64):
                    shadow = self._shadow[name] = tensor.detach().float().clone()
                self._average.append((index, shadow))
            else:
                self._copy.append(index)

    @torch.no_grad()
    def update(self, model):
        """Fold the current weights of `model` (plain or wrapped) into the average; call after each optimizer step.

        One fused multi-tensor operation per step where this torch has them (a per-tensor loop costs ~300 small
        kernel launches per step for x1.0, which shows on NPUs and GPUs)."""
        current = _tensors(unwrap_model(model))
        averaged = _tensors(self.module)
        if len(current) != len(averaged):
            raise ValueError("ModelEma.update: the model has {} parameters + buffers, the averaged copy {}".format(
                len(current), len(averaged)))
        targets, values, rounded = [], [], []
        for index, shadow in self._average:
            target = averaged[index] if shadow is None else shadow
            value = current[index]  # no detach needed: no_grad, and only read
            targets.append(target)
            values.append(value if value.dtype == target.dtype else value.to(target.dtype))
            if shadow is not None:
                rounded.append((averaged[index], shadow))
        _blend(targets, values, 1.0 - self.decay)
        for tensor, shadow in rounded:
            tensor.copy_(shadow)
        _copy([averaged[i] for i in self._copy], [current[i] for i in self._copy])

    def state_dict(self):
        """The averaged weights as a plain model state_dict (loadable into a bare model, e.g. by tools/demo.py).

        Low-precision entries come from their float32 shadow unless the module's copy was changed since the last
        update (e.g. by recalibrate_bn on `.module`): the module is the truth, the shadow only adds precision.
        """
        result = {}
        for name, tensor in self.module.state_dict().items():
            shadow = self._shadow.get(name)
            if shadow is not None and compat.tensors_equal(shadow.to(tensor.dtype), tensor):
                result[name] = shadow.clone()
            else:
                result[name] = tensor.detach().clone()
        return result

    def load_state_dict(self, state_dict):
        """Restore the average from `state_dict()` output (on resume); `module.` prefixes are accepted."""
        state_dict = strip_module_prefix(state_dict)
        self.module.load_state_dict(state_dict)
        for name, shadow in self._shadow.items():
            shadow.copy_(state_dict[name].to(device=shadow.device, dtype=shadow.dtype))


def _named_tensors(module):
    return list(module.named_parameters()) + list(module.named_buffers())


def _tensors(module):
    """Parameters then buffers, in registration order (the same order for a model and its deep copy)."""
    return list(module.parameters()) + list(module.buffers())


def _fused(name, *args, **kwargs):
    """torch._foreach_<name>(*args, **kwargs): one multi-tensor kernel instead of a loop. False where this torch or
    device has none; a missing kernel fails at dispatch, before any tensor changed, so the caller's loop is safe."""
    function = getattr(torch, "_foreach_" + name, None)
    if function is None:
        return False
    try:
        function(*args, **kwargs)
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _blend(tensors, others, weight):
    """tensors = (1 - weight) * tensors + weight * others: fused lerp (torch >= 2.0), else mul + add."""
    if tensors and not _fused("lerp_", tensors, others, weight):
        _scale(tensors, 1.0 - weight)
        _add(tensors, others, weight)


def _scale(tensors, factor):
    """tensors *= factor."""
    if not _fused("mul_", tensors, factor):
        for tensor in tensors:
            tensor.mul_(factor)


def _copy(tensors, others):
    """tensors[i] = others[i] (fused on torch >= 2.1)."""
    if tensors and not _fused("copy_", tensors, others):
        for tensor, other in zip(tensors, others):
            tensor.copy_(other)


def _add(tensors, others, alpha):
    """tensors += alpha * others."""
    if not _fused("add_", tensors, others, alpha=alpha):
        for tensor, other in zip(tensors, others):
            tensor.add_(other, alpha=alpha)
