"""A trained model for the tools: a main.py checkpoint or a bare state_dict turned into an eval-mode model, plus
what the checkpoint says about it (width, classes, the image sizes it was trained and evaluated at).

Used by tools/demo.py and tools/export_onnx.py, so both read a checkpoint the same way.
"""
import math
import sys

import torch

import models
from models.shufflenetv2_wock_op_woct import STAGES_OUT_CHANNELS
from training.checkpoints.checkpoint import load_checkpoint, load_into_model, split_weights, strip_module_prefix
from training.errors import UserError

# main.py's argparse dests for the image sizes, as saved in a checkpoint's "args"
SIZE_KEYS = ("train_crop_size", "val_resize_size", "val_crop_size")


def infer_arch(state_dict, path):
    """The width of a ShuffleNetV2 state_dict, from conv5's weight shape (stage4 -> conv5 channels differ by width)."""
    weight = state_dict.get("conv5.0.weight")
    if weight is None or weight.dim() != 4:
        raise UserError("{} holds no ShuffleNetV2 weights (no conv5.0.weight)".format(path))
    shape = (int(weight.shape[0]), int(weight.shape[1]))
    for arch, channels in sorted(STAGES_OUT_CHANNELS.items()):
        if shape == (channels[4], channels[3]):
            return arch
    raise UserError("{}: conv5 of shape {} matches no ShuffleNetV2 width ({})".format(
        path, shape, ", ".join(models.MODEL_NAMES)))


def note_on_stderr(line):
    """The tools' way to pass on a note (stdout is theirs for results)."""
    print(line, file=sys.stderr, flush=True)


def load_model(path, arch=None, ema=False, shuffle_impl=None, note=note_on_stderr):
    """(eval-mode model on the CPU, meta) from a main.py checkpoint or a bare state_dict; UserError on bad input.

    `meta` is load_model_weights' meta with "arch" always filled in (for a bare state_dict: the inferred width).
    `ema=True` takes the weight average a `--model-ema` run saved beside the model ("model_ema" entry).
    `arch` overrides what the checkpoint says or the weights imply; `shuffle_impl` picks the channel shuffle
    implementation (None: models' default, by device). The file's digest is checked (a damaged file is a
    UserError); `note(line)` hears of a main.py checkpoint without one.
    """
    saved = load_checkpoint(path, note=note)
    state_dict, meta = split_weights(saved)
    if ema:
        averaged = saved.get("model_ema")
        if not isinstance(averaged, dict) or not averaged:
            raise UserError("{} has no EMA weights (was it trained with --model-ema?)".format(path))
        state_dict = strip_module_prefix(averaged)
    arch = arch or meta.get("arch") or infer_arch(state_dict, path)
    fc = state_dict.get("fc.weight")
    if fc is None or fc.dim() != 2:
        raise UserError("{} holds no ShuffleNetV2 classifier (no fc.weight)".format(path))
    try:
        options = {"shuffle_impl": shuffle_impl} if shuffle_impl else {}
        model = models.build_model(arch, num_classes=int(fc.shape[0]), **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    load_into_model(model, state_dict, path)
    model.eval()
    return model, dict(meta, arch=arch)


def image_sizes(meta, **overrides):
    """{train_crop_size, val_resize_size, val_crop_size}: an override that is not None wins, then the checkpoint's
    saved args (main.py's argparse dests), then ImageNet's 224 crops; a resize found nowhere keeps the 256/224 ratio
    to the val crop. A bare state_dict (no args) gets the defaults."""
    saved = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    sizes = {}
    for key in SIZE_KEYS:
        if overrides.get(key) is not None:
            sizes[key] = int(overrides[key])  # the caller checks a user's value (and says which flag is wrong)
        elif isinstance(saved.get(key), int) and not isinstance(saved[key], bool) and saved[key] > 0:
            sizes[key] = saved[key]
    sizes.setdefault("train_crop_size", 224)
    sizes.setdefault("val_crop_size", 224)
    sizes.setdefault("val_resize_size", default_resize(sizes["val_crop_size"]))
    return sizes


def non_finite_tensors(model):
    """Names of the parameters and buffers of `model` holding NaN or infinity (a diverged run's weights)."""
    return [name for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def default_resize(crop_size):
    """ImageNet's 256/224 ratio for a crop size (the resize a checkpoint without saved sizes was evaluated at)."""
    return int(math.floor(crop_size * 256 / 224 + 0.5))
