"""training/ema.py: the EMA arithmetic, wrappers, half precision, resume, and bad decays."""
import pytest
import torch
from torch import nn

from training.ema import ModelEma
from training.errors import UserError


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def fill(model, value):
    """Set every floating entry of the state_dict (weights and BN statistics) to `value`; count to 7."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(value if tensor.is_floating_point() else 7)


def test_update_averages_floats_and_copies_integer_buffers():
    model = small_net()
    fill(model, 1.0)
    ema = ModelEma(model, decay=0.75)
    fill(model, 5.0)
    ema.update(model)
    ema.update(model)
    expected = 0.75 * (0.75 * 1.0 + 0.25 * 5.0) + 0.25 * 5.0  # 2.75
    for name, tensor in ema.module.state_dict().items():
        if tensor.is_floating_point():  # parameters and running_mean / running_var alike
            assert torch.allclose(tensor, torch.full_like(tensor, expected)), name
        else:
            assert int(tensor) == 7, name


def test_module_is_a_frozen_eval_copy():
    model = small_net()
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert torch.equal(ema.module[0].weight, before)  # a deep copy, not a view of the model


def test_wrapped_models_give_the_same_average():
    plain, wrapped = small_net(), small_net()
    ema_plain, ema_wrapped = ModelEma(plain, 0.9), ModelEma(nn.DataParallel(wrapped), 0.9)
    assert list(ema_wrapped.module.state_dict()) == list(plain.state_dict())  # no "module." prefix
    for model in (plain, wrapped):
        fill(model, 3.0)
    ema_plain.update(plain)
    ema_wrapped.update(nn.DataParallel(wrapped))
    for name, tensor in ema_plain.module.state_dict().items():
        assert torch.equal(tensor, ema_wrapped.module.state_dict()[name]), name


def test_half_precision_weights_still_move():
    # float16 cannot represent 1 + 1e-4: without the float32 shadow the average would stay at exactly 1.0
    model = small_net().half()
    fill(model, 1.0)
    ema = ModelEma(model, decay=0.9999)
    fill(model, 2.0)
    for _ in range(100):
        ema.update(model)
    expected = 2.0 - 0.9999 ** 100  # 1.00995
    weight = ema.module[0].weight
    assert weight.dtype == torch.float16
    assert abs(float(weight.flatten()[0]) - expected) < 1e-3
    assert float(weight.flatten()[0]) != 1.0
    exact = ema.state_dict()["0.weight"]
    assert exact.dtype == torch.float32 and abs(float(exact.flatten()[0]) - expected) < 1e-5


def test_state_dict_round_trip_resumes_the_same_average():
    model = small_net()
    ema = ModelEma(model, 0.9)
    fill(model, 2.0)
    ema.update(model)
    saved = {"module." + k: v for k, v in ema.state_dict().items()}  # prefixes from a DDP-era file are accepted
    resumed = ModelEma(small_net(), 0.9)
    resumed.load_state_dict(saved)
    ema.update(model)
    resumed.update(model)
    for name, tensor in ema.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    plain = small_net()
    plain.load_state_dict(ema.state_dict())  # a plain model state_dict, usable by the tools
    assert all(torch.equal(plain.state_dict()[name], tensor) for name, tensor in ema.module.state_dict().items())


def test_bad_decay_is_a_user_error():
    for decay in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(UserError, match=r"^--model-ema decay must be between 0 and 1 \(exclusive\), got "):
            ModelEma(small_net(), decay)
