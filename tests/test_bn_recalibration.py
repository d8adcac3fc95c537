"""training/bn_recalibration.py: BatchNorm statistics recomputed as the cumulative average over N batches, the
model's mode and weights kept, the old statistics kept when it is interrupted or has no batch."""
import pytest
import torch
from torch import nn

from training.bn_recalibration import recalibrate_bn
from training.errors import UserError


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
