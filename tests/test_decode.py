"""training/data/decode.py against torchvision: crop box sampling, reduced decoding (PSNR), image modes."""
import os
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.stats import ks_2samp
from sklearn.datasets import load_sample_images

from tests import torchvision_reference
from training.data import decode


pytestmark = pytest.mark.usefixtures("decode_path")  # every test: fast decoder and Pillow (conftest.py)


def _torchvision_boxes(width, height, count):
    torchvision_reference.seed_crop_draws(0)
    image = torch.empty(3, height, width)
    boxes = []
    for _ in range(count):
        top, left, crop_h, crop_w = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0])
        boxes.append((left, top, crop_w, crop_h))
    return np.array(boxes)


def _our_boxes(width, height, count):
    rng = random.Random(0)
    return np.array([decode.random_crop_box(width, height, rng) for _ in range(count)])


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (60, 20), (31, 30)])
def test_crop_box_distribution_is_torchvisions(size):
    """Same sampling rule: each coordinate's distribution matches (two-sample KS), boxes stay in the image."""
    width, height = size
    ours, theirs = _our_boxes(width, height, 4000), _torchvision_boxes(width, height, 4000)
    assert ours[:, 0].min() >= 0 and ours[:, 1].min() >= 0
    assert (ours[:, 0] + ours[:, 2]).max() <= width and (ours[:, 1] + ours[:, 3]).max() <= height
    for column in range(4):
        assert ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3, (size, column)
    # The share of fallback (central) boxes matches too.
    def central(boxes):
        return np.mean((boxes[:, 0] == (width - boxes[:, 2]) // 2) & (boxes[:, 1] == (height - boxes[:, 3]) // 2))
    assert abs(central(ours) - central(theirs)) < 0.03


@pytest.mark.parametrize("size", [(500, 375), (40, 300)])
def test_crop_box_rule_replays_torchvision_exactly(size):
    """Fed torchvision's own random draws, the rule gives torchvision's boxes (same draws, order, rounding)."""
    width, height = size
    draws = torchvision_reference.crop_param_draws()
    torchvision_reference.seed_crop_draws(3)
    ours = [decode.random_crop_box(width, height, draws) for _ in range(500)]
    torchvision_reference.seed_crop_draws(3)
    image = torch.empty(3, height, width)
    theirs = []
    for _ in range(500):
        top, left, crop_h, crop_w = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0])
        theirs.append((left, top, crop_w, crop_h))
    assert ours == theirs


@pytest.mark.parametrize("size", [(2000, 10), (10, 2000)])
def test_crop_box_fallback_equals_torchvision(size):
    """Where no try can fit (extreme aspect), the central box clamped to the ratio is torchvision's exactly."""
    width, height = size
    assert tuple(_our_boxes(width, height, 1)[0]) == tuple(_torchvision_boxes(width, height, 1)[0])


# ----------------------------------------------------------------------------------------------------------
# Reduced decoding: real photos (scikit-learn's china.jpg and flower.jpg), saved as ImageNet-like JPEGs


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The two 640x427 photos and 2x upscales (1280x854, so 1/2 and 1/4 DCT reductions apply), quality 90."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for index, array in enumerate(load_sample_images().images):
        image = Image.fromarray(array)
        for scale in (1, 2):
            path = os.path.join(str(folder), "photo{}_x{}.jpg".format(index, scale))
            image.resize((640 * scale, 427 * scale), decode.BILINEAR).save(path, quality=90)
            paths.append(path)
    assert len(paths) == 4  # the tests below loop over these: none may pass on an empty list
    return paths


def _psnr(a, b):
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_reduced_train_decoding_is_close_to_full_decoding(photos):
    """Our crop (reduced DCT decoding + one resize) vs torchvision's resized_crop on the full decode for the same
    box: >= 35 dB in the median, >= 33 dB for every box."""
    rng = random.Random(0)
    psnrs, reductions = [], []
    for path in photos:
        full = Image.open(path).convert("RGB")
        for out_size in (112, 224):
            for _ in range(6):
                left, top, crop_w, crop_h = decode.random_crop_box(full.size[0], full.size[1], rng)
                box = (left, top, left + crop_w, top + crop_h)
                reductions.append(decode.dct_reduction(full.size[0], full.size[1], box, out_size))
                ours = decode.decode_box(path, lambda w, h, b=box: b, out_size)
                theirs = TF.resized_crop(full, top, left, crop_h, crop_w, [out_size, out_size],
                                         interpolation=torchvision_reference.BILINEAR)
                assert ours.shape == (out_size, out_size, 3) and ours.dtype == np.uint8
                psnrs.append(_psnr(ours, theirs))
    assert max(reductions) >= 4 and min(reductions) == 1  # the reduced paths were exercised
    assert np.median(psnrs) >= 35.0 and min(psnrs) >= 33.0, sorted(psnrs)[:3]


def test_dct_reduction_is_pillows_draft_choice(photos):
    """The fast path decodes at the scale Pillow's draft picks for the same request."""
    for path in photos:
        for box, out_size in (((0, 0, 600, 400), 224), ((10, 10, 300, 200), 64), ((5, 5, 60, 60), 224)):
            with Image.open(path) as image:
                width, height = image.size
                want = (int(np.ceil(width * out_size / float(box[2] - box[0]))),
                        int(np.ceil(height * out_size / float(box[3] - box[1]))))
                drafted = image.draft("RGB", want) if want[0] < width and want[1] < height else None
                expected = int(round(width / drafted[1][2])) if drafted else 1
            assert decode.dct_reduction(width, height, box, out_size) == expected


def test_reduced_val_decoding_is_close_to_torchvision_val(photos):
    """val_image vs Resize(256) + CenterCrop(224) on the full decode: >= 35 dB (1/2 reduction on large photos)."""
    transform = T.Compose([T.Resize(256), T.CenterCrop(224)])
    for path in photos:
        ours = decode.val_image(path, 256, 224)
        theirs = transform(Image.open(path).convert("RGB"))
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        assert _psnr(ours, theirs) >= 35.0, path


def test_center_crop_box_is_resize_then_center_crop():
    # 500x375: Resize(256) -> 341x256, CenterCrop(224) -> left round(58.5)=58 (banker's rounding), top 16.
    left, top, right, bottom = decode.center_crop_box(500, 375, 256, 224)
    assert left == pytest.approx(58 * 500 / 341.0) and top == pytest.approx(16 * 375 / 256.0)
    assert right - left == pytest.approx(224 * 500 / 341.0) and bottom - top == pytest.approx(224 * 375 / 256.0)


def test_flip_mirrors_the_crop(photos):
    box = (10, 20, 310, 250)
    plain = decode.decode_box(photos[0], lambda w, h: box, 64)
    flipped = decode.decode_box(photos[0], lambda w, h: box, 64, flip=True)
    assert np.array_equal(flipped, plain[:, ::-1])


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"),
                                      ("I;16", "PNG"), ("RGB", "BMP")])
def test_modes_and_formats_decode_like_convert_rgb(tmp_path, mode, fmt):
    """Grayscale, CMYK, palette, alpha, 16-bit and BMP files give RGB crops equal to convert('RGB') + resize."""
    array = load_sample_images().images[1][::4, ::4]  # 160x107 photo
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 200)
    elif mode != "RGB":
        image = image.convert(mode)
    path = str(tmp_path / "image.{}".format(fmt.lower()))
    image.save(path, format=fmt)
    ours = decode.val_image(path, 72, 64)
    theirs = T.Compose([T.Resize(72), T.CenterCrop(64)])(Image.open(path).convert("RGB"))
    assert ours.shape == (64, 64, 3)
    assert _psnr(ours, theirs) >= 35.0
