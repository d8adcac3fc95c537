"""training/ema.py: the EMA arithmetic, wrappers, half precision, resume, and BatchNorm recalibration."""
import pytest
import torch
from torch import nn

from training.bn_recalibration import recalibrate_bn
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


def bn_batches(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 5, 5, generator=generator) * (i + 1) + i, torch.zeros(4)) for i in range(count)]


def test_recalibrate_is_the_cumulative_average_over_n_batches():
    model = nn.Sequential(nn.BatchNorm2d(3))
    model.eval()
    batches = bn_batches(5)
    used = recalibrate_bn(model, batches, lambda batch: batch[0], num_batches=3)
    assert used == 3
    bn = model[0]
    means = [b[0].mean(dim=(0, 2, 3)) for b in batches[:3]]
    variances = [b[0].transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for b in batches[:3]]
    assert torch.allclose(bn.running_mean, sum(means) / 3, atol=1e-5)
    assert torch.allclose(bn.running_var, sum(variances) / 3, atol=1e-4)
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.1 and not model.training and not bn.training
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))  # lr 0


def test_recalibrate_restores_train_mode_and_stops_at_the_loader_end():
    model = nn.Sequential(nn.BatchNorm2d(3))
    model.train()
    assert recalibrate_bn(model, bn_batches(2), lambda batch: batch[0], num_batches=10) == 2
    assert model.training and int(model[0].num_batches_tracked) == 2


def test_interrupted_or_empty_recalibration_keeps_the_old_statistics():
    model = nn.Sequential(nn.BatchNorm2d(3))
    with torch.no_grad():
        model[0].running_mean.fill_(0.5)
        model[0].running_var.fill_(2.0)
    model.eval()
    calls = []

    def prepare(batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return batch[0]

    with pytest.raises(KeyboardInterrupt):
        recalibrate_bn(model, bn_batches(3), prepare, num_batches=3)
    assert torch.equal(model[0].running_mean, torch.full((3,), 0.5))
    assert torch.equal(model[0].running_var, torch.full((3,), 2.0))
    assert model[0].momentum == 0.1 and not model.training
    assert recalibrate_bn(model, [], lambda batch: batch[0], num_batches=3) == 0
    assert torch.equal(model[0].running_var, torch.full((3,), 2.0))
    with pytest.raises(UserError):
        recalibrate_bn(model, bn_batches(1), lambda batch: batch[0], num_batches=0)


def test_recalibrate_shufflenet_touches_every_bn_and_no_weight():
    import models  # part of this repository: an import error must fail the test, not skip it
    model = models.build_model("shufflenet_v2_x0_5", num_classes=3)
    model.eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    batches = [torch.rand(2, 3, 32, 32) for _ in range(3)]
    assert recalibrate_bn(nn.DataParallel(model), batches, lambda batch: batch, num_batches=2) == 2
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 2 for m in bns)
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    assert not model.training
