"""torchvision's own transforms as references, in the form this torchvision offers them: the tests compare our
decoding and colour jitter with them on every lane, including torchvision 0.6 (torch 1.5), whose functional ops
take PIL images only, whose crop sampler draws from Python's `random`, and which has no InterpolationMode."""
import random

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from training.data import decode

# resize interpolation: torchvision >= 0.9 takes InterpolationMode, older releases Pillow's own constant
BILINEAR = T.InterpolationMode.BILINEAR if hasattr(T, "InterpolationMode") else decode.BILINEAR


def _functional_takes_tensors():
    try:
        TF.adjust_brightness(torch.zeros(3, 1, 1), 1.0)
    except TypeError:  # torchvision < 0.8: "img should be PIL Image"
        return False
    return True


def tensor_colour_ops():
    """`(adjust_brightness, adjust_contrast, adjust_saturation)` that take float tensor images: torchvision's
    functional API, or on torchvision < 0.8 its functional_tensor module (the same formulas)."""
    if _functional_takes_tensors():
        return TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation
    from torchvision.transforms import functional_tensor

    return functional_tensor.adjust_brightness, functional_tensor.adjust_contrast, functional_tensor.adjust_saturation


class TorchDraws:
    """A `random.Random` stand-in that draws from torch's global generator exactly as get_params does."""

    def uniform(self, low, high):
        return torch.empty(1).uniform_(low, high).item()

    def randint(self, low, high):
        return int(torch.randint(low, high + 1, size=(1,)).item())


def crop_param_draws():
    """What RandomResizedCrop.get_params draws from: torch's global generator (torchvision >= 0.8, replayed by
    TorchDraws) or Python's global `random` (older). Found by calling it and watching torch's generator."""
    before = torch.get_rng_state()
    T.RandomResizedCrop.get_params(torch.empty(3, 8, 8), [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0])
    return TorchDraws() if not torch.equal(before, torch.get_rng_state()) else random


def seed_crop_draws(seed):
    """Seed both sources, so that `crop_param_draws()` and get_params start from the same state."""
    torch.manual_seed(seed)
    random.seed(seed)
