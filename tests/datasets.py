"""Small image folders that tests build for themselves (no downloads)."""
import os

import numpy as np
from PIL import Image


def _save(array, path, fmt="JPEG"):
    Image.fromarray(array).save(path, format=fmt, quality=90)


def make_image_folder(root, classes=3, train_per_class=4, val_per_class=2, size=(48, 40), seed=0):
    """root/train/<class>/*.jpg and root/val/<class>/*.jpg of random-coloured images; returns root."""
    rng = np.random.RandomState(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = os.path.join(root, split, "class_{}".format(c))
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                base = rng.randint(0, 256, size=3)
                noise = rng.randint(-30, 31, size=(size[1], size[0], 3))
                array = np.clip(base + noise, 0, 255).astype(np.uint8)
                _save(array, os.path.join(folder, "{}_{}.jpg".format(split, i)))
    return str(root)


def make_digits_folder(root, size=32, val_fraction=0.2, seed=0):
    """scikit-learn's bundled 8x8 digits (1797 images), upscaled to `size` and saved as JPEGs in an ImageFolder."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(digits.images))
    n_val = int(len(order) * val_fraction)
    for rank, index in enumerate(order):
        split = "val" if rank < n_val else "train"
        folder = os.path.join(root, split, str(digits.target[index]))
        os.makedirs(folder, exist_ok=True)
        gray = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(gray).resize((size, size), Image.BILINEAR).convert("RGB")
        image.save(os.path.join(folder, "{}.jpg".format(index)), quality=95)
    return str(root)
