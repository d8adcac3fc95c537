"""Cheap decoding and augmentation: the per-image CPU part and the batched device part.

The CPU side does the least work that gives torchvision's result: the crop box is chosen from the header
size before any pixel is decoded, the JPEG decoder's DCT scaling (Pillow's `draft`) skips resolution the
crop does not need, and one antialiased resize turns the crop into the output. Images stay uint8.

The colour jitter runs later on the device, with one random factor per image and adjustment and torchvision's
per-image random order of brightness, contrast and saturation: `color_jitter_` for a whole batch (accelerators),
`color_jitter_one_` image by image (the CPU, where cache-sized passes are what is fast).
"""
import math

import numpy as np
import torch
from PIL import Image

_RESAMPLING = getattr(Image, "Resampling", Image)
_TRANSPOSE = getattr(Image, "Transpose", Image)
BILINEAR = _RESAMPLING.BILINEAR
FLIP_LEFT_RIGHT = _TRANSPOSE.FLIP_LEFT_RIGHT

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_crop_box(width, height, rng, scale=SCALE, ratio=RATIO):
    """RandomResizedCrop's sampling rule: `(left, top, crop_width, crop_height)` for an image of this size.

    Ten tries at an area fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`; if none
    fits, the central crop clamped to `ratio`. `rng` is a `random.Random`.
    """
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = rng.randint(0, height - crop_h)
            left = rng.randint(0, width - crop_w)
            return left, top, crop_w, crop_h
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        crop_w = width
        crop_h = int(round(crop_w / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h = height
        crop_w = int(round(crop_h * max(ratio)))
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def center_crop_box(width, height, resize_size, crop_size):
    """torchvision's Resize(resize_size) + CenterCrop(crop_size) as one box in original pixel coordinates.

    Returns `(left, top, right, bottom)` as floats: the region of the original image that ends up in the crop.
    """
    short, long_side = (width, height) if width <= height else (height, width)
    new_short, new_long = resize_size, int(resize_size * long_side / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    top = int(round((new_h - crop_size) / 2.0))
    left = int(round((new_w - crop_size) / 2.0))
    sx, sy = width / float(new_w), height / float(new_h)
    return left * sx, top * sy, (left + crop_size) * sx, (top + crop_size) * sy


def open_reduced(path, box_fn, out_size):
    """Open `path`, pick the box from its header size, decode at the largest useful DCT reduction.

    `box_fn(width, height)` returns `(left, top, right, bottom)` in original pixels. The JPEG decoder is asked
    for the largest reduction (1/2, 1/4, 1/8) that still leaves the box at least `out_size` pixels wide and
    high; other formats decode at full size. Returns `(RGB image, box in that image's pixels)`.
    """
    with Image.open(path) as image:
        width, height = image.size
        left, top, right, bottom = box_fn(width, height)
        # The decode size at which the box would be exactly out_size; draft never goes below what is asked.
        want = (int(math.ceil(width * out_size / float(right - left))),
                int(math.ceil(height * out_size / float(bottom - top))))
        reduction = 1.0
        if want[0] < width and want[1] < height:
            drafted = image.draft("RGB", want)
            if drafted:  # (mode, (0, 0, width / scale, height / scale)) for JPEG; None for other formats
                reduction = width / float(drafted[1][2])
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")  # L, P, RGBA, CMYK, I;16, ...: as torchvision's default loader does
    return image, (left / reduction, top / reduction, right / reduction, bottom / reduction)


def resize_box(image, box, out_size, flip=False):
    """One antialiased bilinear resize of `box` to `out_size` x `out_size` (pixels around the box feed the
    filter as they would in a resize of the whole image), then the optional flip. Returns uint8 HWC array."""
    array = np.asarray(image.resize((out_size, out_size), BILINEAR, box=box))
    return array[:, ::-1] if flip else array


def decode_box(path, box_fn, out_size, flip=False):
    """open_reduced + resize_box: a uint8 HWC array of `out_size` x `out_size`."""
    image, box = open_reduced(path, box_fn, out_size)
    return resize_box(image, box, out_size, flip)


def train_image(path, crop_size, rng, scale=SCALE):
    """One training sample: RandomResizedCrop box (area fraction in `scale`) + horizontal flip (p=0.5), uint8 HWC
    array of crop_size."""
    def box_fn(width, height):
        left, top, crop_w, crop_h = random_crop_box(width, height, rng, scale=scale)
        return left, top, left + crop_w, top + crop_h

    flip = rng.random() < 0.5
    return decode_box(path, box_fn, crop_size, flip=flip)


def val_image(path, resize_size, crop_size):
    """One validation sample: Resize(resize_size) + CenterCrop(crop_size) in one reduced decode and one resize."""
    return decode_box(path, lambda w, h: center_crop_box(w, h, resize_size, crop_size), crop_size)


# ----------------------------------------------------------------------------------------------------------
# Device side: batched colour jitter with torchvision's semantics.

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


def sample_jitter(batch, strength, generator=None):
    """Per-image factors `[B, 3]` (brightness, contrast, saturation) uniform in [max(0, 1-s), 1+s] and a random
    order `[B, 3]` (a permutation of 0, 1, 2 per image), drawn on the CPU so results do not depend on the device."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    factors = torch.rand(batch, 3, generator=generator) * (high - low) + low
    order = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)
    return factors, order


_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


_GRAY_CACHE = {}


def _gray_weights(device, dtype):
    """The grayscale weights on `device`, made once per device: a new small tensor per batch is a blocking copy."""
    key = (str(device), dtype)
    if key not in _GRAY_CACHE:
        _GRAY_CACHE[key] = torch.tensor(_GRAY, dtype=dtype).to(device)
    return _GRAY_CACHE[key]


def color_jitter_(images, factors, order, bound=1.0):
    """Brightness, contrast and saturation in place on float images `[B, 3, H, W]` with values in [0, bound].

    torchvision blends `(f * img + (1 - f) * other).clamp(0, bound)` with `other` = 0 (brightness), the mean of
    the grayscale image (contrast) or the grayscale image (saturation). All three are `f * img + t` with
    `t` = s * gray + c * mean, so each of the three steps costs one grayscale plane and a few batched passes,
    whichever adjustment each image does at that step: a handful of kernels for the whole batch (accelerators).
    The blend is linear, so `bound=255` on 0..255 images gives 255 times the result on 0..1 images.
    """
    batch = images.shape[0]
    device, dtype = images.device, images.dtype
    factors = factors.to(device=device, dtype=dtype)
    order = order.to(device)
    flat = images.view(batch, 3, -1)
    weights = _gray_weights(device, dtype).view(1, 1, 3).expand(batch, 1, 3).contiguous()
    zero = torch.zeros((), device=device, dtype=dtype)
    for step in range(3):
        op = order[:, step]
        factor = factors.gather(1, op.unsqueeze(1)).unsqueeze(2)  # [B, 1, 1]
        rest = 1.0 - factor
        contrast = torch.where((op == CONTRAST).view(-1, 1, 1), rest, zero)
        saturation = torch.where((op == SATURATION).view(-1, 1, 1), rest, zero)
        gray = torch.bmm(weights, flat)  # [B, 1, HW]
        mean = gray.mean(dim=2, keepdim=True)
        gray.mul_(saturation).add_(contrast * mean)
        flat.mul_(factor).add_(gray).clamp_(0.0, bound)
    return images


def color_jitter_one_(image, factors, order, bound=1.0):
    """The same adjustments in place on one float image `[3, H, W]`; `factors` and `order` are Python lists.

    For the CPU: one image stays in the cache through all passes and each adjustment does only its own work
    (brightness needs no grayscale plane, contrast only channel means), about half the memory traffic of the
    batched form, which a CPU pays for while an accelerator does not.
    """
    flat = image.view(3, -1)
    weights = _gray_weights(image.device, image.dtype)
    for op in order:
        factor = factors[op]
        if op == BRIGHTNESS:
            flat.mul_(factor)
        elif op == CONTRAST:
            mean = float(torch.dot(weights, flat.mean(dim=1)))
            flat.mul_(factor).add_((1.0 - factor) * mean)
        else:
            gray = torch.matmul(weights, flat)
            flat.mul_(factor).add_(gray.unsqueeze(0), alpha=1.0 - factor)
        if factor > 1.0:  # a factor <= 1 blends between values in [0, bound]: the clamp would change nothing
            flat.clamp_(0.0, bound)
    return image
