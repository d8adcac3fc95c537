"""Augmentation in one place: the per-image CPU part (decode, crop box, resize, flip) and the device part
(float conversion, colour jitter, normalization).

The CPU side does the least work that gives torchvision's result: the crop box is chosen from the header
size before any pixel is decoded, the JPEG decoder's DCT scaling skips resolution the crop does not need, and
one resize turns the crop into the output. Images stay uint8.

Fast path (default): simplejpeg (libjpeg-turbo) decodes baseline and progressive JPEGs at the smallest scale
(M/8) that keeps the box at least the output size, and one OpenCV bilinear warp maps the box onto the output.
Pillow decodes every file the fast path refuses (PNG, BMP, CMYK/YCCK JPEGs, files simplejpeg cannot read) with
`draft` + one antialiased resize, chosen per file; both give uint8 `[size, size, 3]`. `SHUFFLENET_FAST_DECODE=0`
turns the fast path off; without simplejpeg or OpenCV installed, Pillow decodes everything
(`warn_if_no_fast_decode` says so once).

The colour jitter runs on the device, with one random factor per image and adjustment and torchvision's
per-image random order of brightness, contrast and saturation: `color_jitter_` for a whole batch (accelerators),
`color_jitter_one_` image by image (the CPU, where cache-sized passes are what is fast). `DevicePreprocess`
draws the factors from its own generator keyed by (seed, epoch), so they never depend on loader internals.
"""
import io
import logging
import math
import os

import numpy as np
from PIL import Image


_RESAMPLING = getattr(Image, "Resampling", Image)
_TRANSPOSE = getattr(Image, "Transpose", Image)
BILINEAR = _RESAMPLING.BILINEAR
FLIP_LEFT_RIGHT = _TRANSPOSE.FLIP_LEFT_RIGHT

FAST_DECODE_ENV = "SHUFFLENET_FAST_DECODE"  # "0": always decode with Pillow
MEAN = (0.485, 0.456, 0.406)  # ImageNet, 0..1 scale
STD = (0.229, 0.224, 0.225)

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------------------------
# Fast decoder (simplejpeg + OpenCV), loaded once per process


_FAST = {}  # "modules": (simplejpeg, cv2) or None; "reason": why not


def fast_modules():
    """`(simplejpeg, cv2)` when both import (OpenCV then uses one thread: one per data worker), else None."""
    if "modules" not in _FAST:
        try:
            import cv2
            import simplejpeg
        except Exception as exc:  # ImportError, or a broken binary wheel (OSError, AttributeError, ...)
            _FAST["modules"], _FAST["reason"] = None, " ".join(str(exc).split()) or type(exc).__name__
        else:
            cv2.setNumThreads(1)
            _FAST["modules"] = (simplejpeg, cv2)
    return _FAST["modules"]


def fast_decode_enabled():
    """True unless SHUFFLENET_FAST_DECODE=0 or simplejpeg/OpenCV are missing."""
    return os.environ.get(FAST_DECODE_ENV, "1").strip() != "0" and fast_modules() is not None


def init_worker(worker_id=None):
    """DataLoader worker_init_fn (and the main process when workers=0): one OpenCV thread per process."""
    modules = fast_modules()
    if modules is not None:
        modules[1].setNumThreads(1)  # again in a worker: a forked child may not keep the parent's setting


def warn_if_no_fast_decode():
    """One warning line per process when the fast path is wanted but simplejpeg/OpenCV are missing."""
    if os.environ.get(FAST_DECODE_ENV, "1").strip() == "0" or fast_modules() is not None or _FAST.get("warned"):
        return
    _FAST["warned"] = True
    logger.warning("warning: fast JPEG decoding off (%s): decoding with Pillow, about twice the CPU time; "
                   "pip install simplejpeg opencv-python-headless", _FAST["reason"])


def jpeg_size(raw, simplejpeg):
    """`(width, height)` of a JPEG the fast decoder handles (RGB or grayscale), else None."""
    if raw[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(raw)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "RGB", "Gray") or width < 1 or height < 1:
        return None  # CMYK/YCCK: Pillow converts those as torchvision's loader does
    return width, height


def _box_in(width, height, box, out_size):
    """The decode size at which `box` is exactly out_size pixels (never above the full size)."""
    left, top, right, bottom = box
    return (min(width, int(math.ceil(width * out_size / float(right - left)))),
            min(height, int(math.ceil(height * out_size / float(bottom - top)))))


def dct_reduction(width, height, box, out_size):
    """The largest of 1, 2, 4, 8 that leaves `box` at least out_size pixels wide and high (Pillow's `draft` rule)."""
    want_w, want_h = _box_in(width, height, box, out_size)
    scale = min(width // want_w, height // want_h)
    return next(factor for factor in (8, 4, 2, 1) if factor <= scale or factor == 1)


def scaled_decode(raw, size, reduction, simplejpeg):
    """simplejpeg's decode at 1/reduction (1, 2, 4, 8) as uint8 RGB HWC, or None when it did not scale as asked."""
    width, height = size
    want_w, want_h = -(-width // reduction), -(-height // reduction)  # ceil: libjpeg's scaled size
    decoded = simplejpeg.decode_jpeg(raw, colorspace="RGB", min_width=want_w if reduction > 1 else 0,
                                     min_height=want_h if reduction > 1 else 0)
    return decoded if decoded.shape[:2] == (want_h, want_w) else None


def warp_box(image, box, out_size, cv2):
    """`box` (floats, in `image` pixels) of a uint8 HWC array onto out_size x out_size: antialiasing blur when
    it shrinks, then one bilinear resize of a whole-pixel box, or one bilinear warp of a sub-pixel box (both in
    Pillow's pixel-centre convention, so every box lands where Pillow's does)."""
    left, top, right, bottom = box
    step_x, step_y = (right - left) / out_size, (bottom - top) / out_size
    region, x0, y0 = _antialias(image, box, step_x, step_y, cv2)
    if all(float(value).is_integer() for value in box):  # whole-pixel box: cv2.resize maps it the same, faster
        x_lo, y_lo = int(left) - x0, int(top) - y0
        crop = region[y_lo:y_lo + int(bottom - top), x_lo:x_lo + int(right - left)]
        return cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    # Output pixel i samples the box at left + (i + 0.5) * step in continuous coordinates, i.e. at pixel index
    # left + (i + 0.5) * step - 0.5.
    matrix = np.array([[step_x, 0.0, left - x0 + 0.5 * step_x - 0.5],
                       [0.0, step_y, top - y0 + 0.5 * step_y - 0.5]])
    return cv2.warpAffine(region, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _fast_decode_box(raw, size, box, out_size, modules):
    """scaled_decode at Pillow's draft scale + warp_box: uint8 HWC, or None (Pillow then decodes the file)."""
    simplejpeg, cv2 = modules
    reduction = dct_reduction(size[0], size[1], box, out_size)
    decoded = scaled_decode(raw, size, reduction, simplejpeg)
    if decoded is None:
        return None
    return warp_box(decoded, tuple(value / float(reduction) for value in box), out_size, cv2)


def _antialias(image, box, step_x, step_y, cv2):
    """`(region, x0, y0)`: the part of `image` the warp reads, blurred when it shrinks so that blur + bilinear
    sampling approximate Pillow's antialiased bilinear filter (a triangle `step` pixels wide each side:
    variance step**2 / 6, of which bilinear sampling supplies 1 / 6)."""
    sigma_x = math.sqrt(max(step_x * step_x - 1.0, 0.0) / 6.0)
    sigma_y = math.sqrt(max(step_y * step_y - 1.0, 0.0) / 6.0)
    if max(sigma_x, sigma_y) < 0.05:
        return image, 0, 0
    margin = int(math.ceil(3.0 * max(sigma_x, sigma_y))) + 2
    height, width = image.shape[:2]
    left, top, right, bottom = box
    x0, y0 = max(0, int(left) - margin), max(0, int(top) - margin)
    x1, y1 = min(width, int(math.ceil(right)) + margin), min(height, int(math.ceil(bottom)) + margin)
    region = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigmaX=max(sigma_x, 0.01), sigmaY=max(sigma_y, 0.01),
                              borderType=cv2.BORDER_REPLICATE)
    return region, x0, y0


# ----------------------------------------------------------------------------------------------------------
# Pillow decoder (fallback per file)


def open_reduced(source, box_fn, out_size):
    """Open `source` (a path or file object) with Pillow, pick the box from its header size, decode at the
    largest useful DCT reduction.

    `box_fn(width, height)` returns `(left, top, right, bottom)` in original pixels. The JPEG decoder is asked
    for the largest reduction (1/2, 1/4, 1/8) that still leaves the box at least `out_size` pixels wide and
    high; other formats decode at full size. Returns `(RGB image, box in that image's pixels)`.
    """
    with Image.open(source) as image:
        width, height = image.size
        box = box_fn(width, height)
        want = _box_in(width, height, box, out_size)
        reduction = 1.0
        if want[0] < width and want[1] < height:
            drafted = image.draft("RGB", want)  # never below what is asked
            if drafted:  # (mode, (0, 0, width / scale, height / scale)) for JPEG; None for other formats
                reduction = width / float(drafted[1][2])
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")  # L, P, RGBA, CMYK, I;16, ...: as torchvision's default loader does
    return image, tuple(value / reduction for value in box)


def resize_box(image, box, out_size, flip=False):
    """One antialiased bilinear resize of `box` to `out_size` x `out_size` (pixels around the box feed the
    filter as they would in a resize of the whole image), then the optional flip. Returns uint8 HWC array."""
    array = np.asarray(image.resize((out_size, out_size), BILINEAR, box=box))
    return array[:, ::-1] if flip else array


def decode_box(path, box_fn, out_size, flip=False):
    """The box that `box_fn(width, height)` picks, as a uint8 HWC array of `out_size` x `out_size`.

    The fast path when enabled and the file is a JPEG it handles, Pillow otherwise (or when simplejpeg
    refuses the data); `box_fn` is called exactly once either way, so the crop does not depend on the path.
    """
    modules = fast_modules() if fast_decode_enabled() else None
    if modules is None:
        image, box = open_reduced(path, box_fn, out_size)
        return resize_box(image, box, out_size, flip)
    with open(path, "rb") as handle:
        raw = handle.read()
    size = jpeg_size(raw, modules[0])
    if size is None:
        image, box = open_reduced(io.BytesIO(raw), box_fn, out_size)
        return resize_box(image, box, out_size, flip)
    box = box_fn(size[0], size[1])
    try:
        array = _fast_decode_box(raw, size, box, out_size, modules)
    except ValueError:  # data simplejpeg refuses (e.g. truncated): Pillow decides, with the same box
        array = None
    if array is None:
        image, reduced = open_reduced(io.BytesIO(raw), lambda width, height: box, out_size)
        return resize_box(image, reduced, out_size, flip)
    return array[:, ::-1] if flip else array


def draw_flip(rng):
    """The horizontal flip (p=0.5) of a training sample: drawn from its `rng` before its crop box."""
    return rng.random() < 0.5


def random_box(width, height, rng, scale=SCALE):
    """random_crop_box as `(left, top, right, bottom)`."""
    left, top, crop_w, crop_h = random_crop_box(width, height, rng, scale=scale)
    return left, top, left + crop_w, top + crop_h


def train_image(path, crop_size, rng, scale=SCALE):
    """One training sample: RandomResizedCrop box (area fraction in `scale`) + horizontal flip (p=0.5), uint8 HWC
    array of crop_size."""
    flip = draw_flip(rng)
    return decode_box(path, lambda width, height: random_box(width, height, rng, scale=scale), crop_size, flip=flip)


def val_image(path, resize_size, crop_size):
    """One validation sample: Resize(resize_size) + CenterCrop(crop_size) in one reduced decode and one resize."""
    return decode_box(path, lambda w, h: center_crop_box(w, h, resize_size, crop_size), crop_size)
