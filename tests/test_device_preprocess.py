"""training/data/device_preprocess.py against torchvision: colour jitter (batched and per image, its factors and
orders), normalization, and the jitter factors' trip to the device."""
import pytest
import torch
import torchvision.transforms.functional as TF

from tests import torchvision_reference
from training.data import decode
from training.data import device_preprocess
from training.errors import UserError


def _reference_jitter(images, factors, order):
    """torchvision's functional tensor ops, one image at a time, in the given order."""
    functions = dict(zip((device_preprocess.BRIGHTNESS, device_preprocess.CONTRAST, device_preprocess.SATURATION),
                         torchvision_reference.tensor_colour_ops()))
    out = []
    for image, row, steps in zip(images, factors.tolist(), order.tolist()):
        for op in steps:
            image = functions[op](image, row[op])
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("strength", [0.2, 0.4, 1.5])
def test_batched_and_per_image_jitter_equal_torchvision(strength):
    generator = torch.Generator()
    generator.manual_seed(1)
    images = torch.rand(12, 3, 9, 7, generator=generator)
    factors, order = device_preprocess.sample_jitter(12, strength, generator)
    expected = _reference_jitter(images, factors, order)
    batched = device_preprocess.color_jitter_(images.clone(), factors, order)
    assert torch.allclose(batched, expected, atol=2e-6)
    one = images.clone()
    for i in range(12):
        device_preprocess.color_jitter_one_(one[i], factors[i].tolist(), order[i].tolist())
    assert torch.allclose(one, expected, atol=2e-6)
    # The 0..255 scale used by DevicePreprocess gives 255 times the same result.
    scaled = device_preprocess.color_jitter_(images * 255.0, factors, order, bound=255.0)
    assert torch.allclose(scaled / 255.0, expected, atol=1e-5)
    assert (expected - images).abs().max() > 0.01  # the jitter did something


def test_jitter_factors_and_orders_are_torchvisions_distribution():
    generator = torch.Generator()
    generator.manual_seed(0)
    factors, order = device_preprocess.sample_jitter(6000, 0.4, generator)
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert abs(factors.mean().item() - 1.0) < 0.01
    assert torch.equal(order.sort(dim=1).values, torch.arange(3).expand(6000, 3))
    counts = {}
    for row in order.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 6 and min(counts.values()) > 900  # all 6 orders, about 1000 each
    again = torch.Generator()
    again.manual_seed(0)
    assert torch.equal(device_preprocess.sample_jitter(6000, 0.4, again)[0], factors)
    low_factors, _ = device_preprocess.sample_jitter(100, 1.5, generator)
    assert low_factors.min() >= 0.0  # lower bound max(0, 1 - s), as torchvision


def _reference(images_uint8, factors=None, order=None):
    """torchvision's pipeline on the device side: to [0, 1], the jitter (if any), then normalization."""
    images = images_uint8.float() / 255.0
    if factors is not None:
        images = _reference_jitter(images, factors, order)
    return torch.stack([TF.normalize(image, decode.MEAN, decode.STD) for image in images])


def test_device_preprocess_normalizes_and_jitters_like_torchvision():
    images = torch.randint(0, 256, (6, 3, 10, 12), dtype=torch.uint8)
    original = images.clone()
    plain = device_preprocess.DevicePreprocess(jitter=0.4)(images, train=False)
    assert plain.dtype == torch.float32 and torch.allclose(plain, _reference(images), atol=1e-5)
    generator = torch.Generator()
    generator.manual_seed(5)
    jittered = device_preprocess.DevicePreprocess(jitter=0.4, generator=generator)(images, train=True)
    generator.manual_seed(5)
    factors, order = device_preprocess.sample_jitter(6, 0.4, generator)
    assert torch.allclose(jittered, _reference(images, factors, order), atol=1e-4)
    assert torch.equal(images, original)  # the input is never modified
    assert torch.allclose(device_preprocess.DevicePreprocess(jitter=0.0)(images, train=True), plain)
    last = device_preprocess.DevicePreprocess(channels_last=True)(images, train=False)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.allclose(last, plain)
    with pytest.raises(UserError):
        device_preprocess.DevicePreprocess(jitter=-1)


def test_jitter_factors_reach_the_device_unchanged():
    factors, order = device_preprocess.sample_jitter(5, 0.4, torch.Generator().manual_seed(3))
    on_device_factors, on_device_order = device_preprocess.upload_jitter(factors, order, torch.device("cpu"))
    assert torch.equal(on_device_factors, factors)
    assert torch.equal(on_device_order, order) and on_device_order.dtype == torch.int64
