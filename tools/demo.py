"""Classify images with a trained ShuffleNetV2: top-5 classes with probabilities per image.

    python3 -m tools.demo CHECKPOINT IMAGE_OR_FOLDER... [--classes DATA_DIR_OR_FILE] [--ema] [--device cuda]

CHECKPOINT is a main.py checkpoint (checkpoint.pth.tar / model_best.pth.tar) or a bare state_dict such as
torchvision's shufflenetv2_x1-5666bf0f80.pth; the width (x0.5 ... x2.0) and the class count are read from it.
Images are decoded, resized and cropped exactly as in validation (training.data.loaders.load_val_image) and normalized
by the same DevicePreprocess as training. A folder argument means every image inside it (recursively).

Class names, first found: --classes (a data set folder: the class sub-folders of DIR/train or DIR; or a text
file, one name per line), the `classes` a main.py checkpoint carries, the ImageNet-1k names shipped in
data/imagenet1k_classes.tsv for 1000-class weights, else "class N".

The resize and crop sizes are the ones the checkpoint was evaluated at (its saved --val-resize-size and
--val-crop-size), 256/224 for a bare state_dict; --resize-size / --crop-size override them. The checkpoint is read
by training/checkpoints/pretrained.py, as in tools/export_onnx.py.
"""
import argparse
import os
import sys

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import torch

import models
from training.data import loaders
from training.data.device_preprocess import DevicePreprocess
from training.checkpoints.pretrained import image_sizes, load_model
from training.errors import UserError, run_cli

IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                "imagenet1k_classes.tsv")


# ----------------------------------------------------------------------------------------------------------
# Class names


def _read_rows(path):
    """The non-blank lines of a text file, each split at tabs; UserError when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as stream:
            return [line.rstrip("\n\r").split("\t") for line in stream if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError("cannot read class names from {}: {}".format(path, exc)) from None


def read_name_file(path):
    """Names from a text file, one per line; `wnid<TAB>name` lines (data/imagenet1k_classes.tsv) give the name."""
    return [row[-1].strip() for row in _read_rows(path)]


def imagenet_names():
    """{wnid: name} and the name list of the shipped ImageNet-1k file (index order = sorted wnids)."""
    rows = _read_rows(IMAGENET_CLASSES)
    names = [row[-1].strip() for row in rows]
    return {row[0]: name for row, name in zip(rows, names)}, names


def class_names(num_classes, meta, classes_arg=None):
    """A name per class index (see the module docstring for the order of sources); UserError on a count mismatch."""
    source, names = None, None
    if classes_arg:
        source = classes_arg
        if os.path.isdir(classes_arg):
            train = os.path.join(classes_arg, "train")
            names = loaders.list_classes(train if os.path.isdir(train) else classes_arg)
        elif os.path.isfile(classes_arg):
            names = read_name_file(classes_arg)
        else:
            raise UserError("--classes: no such folder or file: {}".format(classes_arg))
    elif meta.get("classes"):
        source, names = "the checkpoint", [str(n) for n in meta["classes"]]
    elif num_classes == 1000:
        return imagenet_names()[1]
    else:
        return ["class {}".format(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError("{} names {} classes but the model has {}".format(source, len(names), num_classes))
    by_wnid, _ = imagenet_names()
    # ImageNet folder names (n01440764 ...) read better with their English name beside them
    return ["{} ({})".format(by_wnid[n], n) if n in by_wnid else n for n in names]


# ----------------------------------------------------------------------------------------------------------
# Images


def expand_images(arguments):
    """Files as given, folders replaced by the images inside them (sorted); UserError for a missing path."""
    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found, _ = loaders.list_images(argument)
            if not found:
                raise UserError("no image files in folder {}".format(argument))
            paths.extend(found)
        elif os.path.isfile(argument):
            paths.append(argument)
        else:
            raise UserError("no such image file or folder: {}".format(argument))
    return paths


def predict(model, paths, device, *, resize_size=256, crop_size=224, topk=5, batch_size=32):
    """Yield (path, [(probability, class index), ...] best first) per image, a batch at a time, so a long folder
    shows results as it goes; UserError for an unreadable image."""
    preprocess = DevicePreprocess(jitter=0.0)
    k = min(topk, model.fc.out_features)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = torch.stack([loaders.load_val_image(p, resize_size, crop_size) for p in chunk]).to(device)
        with torch.no_grad():
            probabilities = torch.softmax(model(preprocess(images, train=False)).float(), dim=1)
        values, indices = probabilities.topk(k, dim=1)
        for path, row_values, row_indices in zip(chunk, values.tolist(), indices.tolist()):
            yield path, list(zip(row_values, row_indices))


def format_result(path, top, names):
    lines = [path]
    for rank, (probability, index) in enumerate(top, 1):
        lines.append("  {}. {:6.2f}%  {}".format(rank, 100.0 * probability, names[index]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Top-5 classes with probabilities for images, from a main.py checkpoint or torchvision weights.")
    parser.add_argument("checkpoint", help="main.py checkpoint (.pth.tar) or a bare state_dict (.pth)")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    parser.add_argument("--classes", "--data", dest="classes", metavar="DIR_OR_FILE",
                        help="class names: the data set folder (its train/ class folders) or a file, one per line")
    parser.add_argument("--arch", choices=models.MODEL_NAMES, help="override the width read from the checkpoint")
    parser.add_argument("--ema", action="store_true", help="use the --model-ema weights saved in the checkpoint")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--resize-size", type=int,
                        help="shorter side before the crop (default: the checkpoint's --val-resize-size, else 256)")
    parser.add_argument("--crop-size", type=int,
                        help="centre crop (default: the checkpoint's --val-crop-size, else 224)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, npu:0 ...")
    args = parser.parse_args(argv)
    if args.topk < 1:
        raise UserError("--topk must be >= 1, got {}".format(args.topk))
    return args


def check_sizes(resize_size, crop_size):
    if crop_size < 1 or resize_size < crop_size:
        raise UserError("--resize-size must be >= --crop-size >= 1, got {} and {}".format(resize_size, crop_size))


def resolve_device(name):
    """torch.device for --device (training.device's checks: the NPU plug-in imported, guarded, only when asked for;
    an index past the visible devices a UserError)."""
    from training.device import resolve_device_type, set_device

    kind, _, index = name.partition(":")
    kind = resolve_device_type(kind)
    if index and not index.isdigit():
        raise UserError("--device {}: the device index must be a number, as in cuda:1".format(name))
    return set_device(kind, int(index or 0))


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, args.arch, args.ema)
    sizes = image_sizes(meta, val_resize_size=args.resize_size, val_crop_size=args.crop_size)
    check_sizes(sizes["val_resize_size"], sizes["val_crop_size"])
    paths = expand_images(args.images)
    names = class_names(model.fc.out_features, meta, args.classes)
    model.to(device)
    for path, top in predict(model, paths, device, resize_size=sizes["val_resize_size"],
                             crop_size=sizes["val_crop_size"], topk=args.topk):
        print(format_result(path, top, names))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
