"""Fake apex.amp with the calls main.py makes: initialize, scale_loss, state_dict, load_state_dict."""
import contextlib

from apex import CALLS

_STATE = {"loss_scaler0": {"loss_scale": 0.0, "unskipped": 0}}


def initialize(model, optimizer, opt_level="O1", loss_scale=None, combine_grad=None, **kwargs):
    if kwargs:
        raise TypeError("unexpected apex.amp.initialize arguments: {}".format(sorted(kwargs)))
    CALLS.append(("initialize", {"opt_level": opt_level, "loss_scale": loss_scale, "combine_grad": combine_grad}))
    _STATE["loss_scaler0"]["loss_scale"] = 65536.0 if loss_scale == "dynamic" else float(loss_scale)
    optimizer._amp_stash = object()  # the real one: fused optimizers refuse to step without it
    return model, optimizer


@contextlib.contextmanager
def scale_loss(loss, optimizer):
    CALLS.append(("scale_loss", type(optimizer).__name__))
    _STATE["loss_scaler0"]["unskipped"] += 1
    yield loss * 1.0


def state_dict():
    CALLS.append(("state_dict",))
    return {k: dict(v) for k, v in _STATE.items()}


def load_state_dict(state):
    CALLS.append(("load_state_dict", state))
    _STATE.update({k: dict(v) for k, v in state.items()})
