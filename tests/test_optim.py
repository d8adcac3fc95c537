"""training/optim.py: per-iteration warm-up, cosine and linear decay; weight-decay groups."""
import math

import pytest
import torch
from conftest import small_net

from training import optim
from training.optim import LrSchedule, lr_at


def test_warmup_is_linear_and_never_zero():
    values = [lr_at(s, 1.0, total_steps=100, warmup_steps=4) for s in range(4)]
    assert values == [0.25, 0.5, 0.75, 1.0]


def test_cosine_after_warmup():
    assert lr_at(10, 0.8, 110, 10, "cosine") == pytest.approx(0.8)
    assert lr_at(60, 0.8, 110, 10, "cosine") == pytest.approx(0.4)  # half way: cos(pi/2) = 0
    assert lr_at(35, 0.8, 110, 10, "cosine") == pytest.approx(0.4 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, 0.8, 110, 10, "cosine") == pytest.approx(0.0)
    assert lr_at(500, 0.8, 110, 10, "cosine") == pytest.approx(0.0)  # past the end: stays at 0


def test_linear_decay_like_the_paper():
    assert [lr_at(s, 0.5, 4, 0, "linear") for s in range(5)] == [0.5, 0.375, 0.25, 0.125, 0.0]


def test_schedule_sets_every_group_and_is_independent_of_the_split_into_runs():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0}], lr=9)
    sched = LrSchedule(0.4, epochs=3, steps_per_epoch=10, warmup_epochs=0.5, schedule="linear")
    assert sched.warmup_steps == 5 and sched.total_steps == 30
    value = sched.apply(optimizer, epoch=1, step=3)  # global step 13
    assert value == pytest.approx(0.4 * (1 - 8 / 25))
    assert [g["lr"] for g in optimizer.param_groups] == [value, value]
    # a resumed run (new object) gives the same value at the same global step
    assert LrSchedule(0.4, 3, 10, 0.5, "linear").lr(1, 3) == value


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown LR schedule 'step'"):
        LrSchedule(0.1, 1, 1, 0, "step")


def test_weight_decay_groups():
    net = small_net()
    groups = optim.parameter_groups(net, 1e-4, norm_weight_decay=0.0, bias_weight_decay=0.0)
    by_wd = {g["weight_decay"]: len(g["params"]) for g in groups}
    assert by_wd == {1e-4: 2, 0.0: 4}  # conv + fc weights; BN weight/bias + conv/fc biases
    assert len(optim.parameter_groups(net, 1e-4)) == 1  # defaults: one group with --wd
    assert sum(len(g["params"]) for g in optim.parameter_groups(net, 1e-4, 0.0)) == 6
