"""Export a ShuffleNetV2 checkpoint to ONNX with a dynamic batch, for onnxruntime and Ascend ATC alike.

    python3 -m tools.export_onnx CHECKPOINT OUTPUT.onnx [--opset 11|13] [--ema] [--crop-size N]

Input `input`: float32 [batch, 3, crop, crop], RGB, normalized as in training ((pixel/255 - mean) / std with
ImageNet's mean/std, after the checkpoint's validation Resize + CenterCrop); output `output`: float32 [batch,
classes] logits. The crop is the checkpoint's --val-crop-size (224 for a bare state_dict) unless --crop-size is
given. Height and width stay fixed (ATC compiles static shapes best); the batch is dynamic. A checkpoint whose
weights hold NaN or infinity (a diverged run) is refused.

Choices, and why:
- opset 11 by default: every ATC release that imports ONNX accepts opset 11 (13 only the newer ones), and
  onnxruntime runs both. The graph uses Conv, Relu, MaxPool, Concat, Gather, ReduceMean and Gemm only, whose
  meaning is the same in 11 and 13, so `--opset 13` gives the same numbers. A torch whose exporter has no opset 13
  (torch < 1.8) writes opset 11 and says so in one line.
- channel shuffle as cat + index_select (ONNX Concat + Gather): the transpose form exports the shape arithmetic of
  its reshapes for a dynamic batch (1,166 nodes for x0.5, mostly Shape/Gather/Unsqueeze/Concat/Reshape chains);
  the index_select form is 29 Gathers with constant indices (222 nodes in all). Exporters that cannot inline the
  model's custom autograd Function (torch older than 2.1: no `autograd_inlining` argument) get the transpose form,
  which exports everywhere.
- BatchNorm is folded into the convolutions by the exporter (eval mode, constant folding); torch 1.5's exporter
  does not fold, so there the model's Conv + BatchNorm pairs are fused before the export (the same arithmetic).
- torch >= 2.9 defaults to the dynamo exporter, which needs the onnxscript package: the TorchScript exporter is asked
  for (dynamo=False) where that argument exists, so no extra package is needed.
- The file is written to a temporary name and renamed, so an interrupted export never leaves a broken OUTPUT.onnx.
After the export, onnxruntime (when installed) runs the file on two batch sizes; every logit must satisfy
|onnx - torch| <= --tolerance + --rtol * |torch| (numpy.allclose's rule), else it is an error.
"""
import argparse
import copy
import inspect
import io
import json
import os
import sys
import warnings

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import torch

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import numpy as np

import models
from training import compat
from training.checkpoints.files import atomic_write
from training.checkpoints.pretrained import default_resize, image_sizes, load_model, non_finite_tensors
from training.data.decode import MEAN, STD
from training.errors import UserError, run_cli

OPSETS = (11, 13)
INPUT_NAME, OUTPUT_NAME = "input", "output"


def _export_parameters():
    return inspect.signature(torch.onnx.export).parameters


def shuffle_impl_for_export():
    """index_select where the exporter inlines the model's autograd Function (torch >= 2.1), else transpose."""
    return "index_select" if "autograd_inlining" in _export_parameters() else "transpose"


def usable_opset(requested, log=print):
    """`requested`, or opset 11 (the default) where this torch's exporter stops below it, said in one line."""
    newest = compat.newest_onnx_opset()
    if newest is None or requested <= newest:
        return requested
    log("note: {}: writing opset {} (the default)".format(compat.needs("ONNX opset {}".format(requested), "1.8"),
                                                          OPSETS[0]))
    return OPSETS[0]


def fold_batchnorm(model):
    """A copy of `model` in which each BatchNorm2d that follows a Conv2d in a Sequential is fused into it (eval
    mode): what newer exporters do themselves."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[index], module[index + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return folded


def export(model, path, crop_size=224, opset=11, metadata=None):
    """Write `model` (eval mode, CPU) to `path` as ONNX with a dynamic batch and `metadata` strings."""
    options = {"dynamo": False} if "dynamo" in _export_parameters() else {}
    if not compat.onnx_export_folds_batchnorm():
        model = fold_batchnorm(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # trace-time shape checks, all constant here
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(
            model, (torch.zeros(1, 3, crop_size, crop_size),), buffer, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **options)
    content = with_metadata(buffer.getvalue(), metadata) if metadata else buffer.getvalue()
    atomic_write(path, lambda stream: stream.write(content))


def with_metadata(content, metadata):
    """The serialized model `content` with key/value strings added to its metadata_props (unchanged when the onnx
    package is not installed)."""
    try:
        import onnx
    except ImportError:
        return content
    proto = onnx.load_model_from_string(content)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def compare_with_onnxruntime(model, path, *, atol, rtol, batch_sizes=(1, 3), crop_size=224, seed=0):
    """(largest |onnxruntime - torch|, largest |torch| logit, whether every output is within atol + rtol * |torch|)
    over random inputs of each batch size; None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst, largest, within = 0.0, 0.0, True
    for batch in batch_sizes:
        inputs = torch.randn(batch, 3, crop_size, crop_size, generator=generator)
        with torch.no_grad():
            expected = model(inputs).numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
        if actual.shape != expected.shape:
            raise UserError("onnxruntime returned shape {} for batch {}, torch {}".format(
                actual.shape, batch, expected.shape))
        worst = max(worst, float(np.abs(actual - expected).max()))
        largest = max(largest, float(np.abs(expected).max()))
        within = within and bool(np.allclose(actual, expected, rtol=rtol, atol=atol))
    return worst, largest, within


def describe_difference(worst, largest):
    """'max |difference| 3.87e+10 = 2.4e-06 of the largest |logit| (1.6e+16)': the absolute figure alone means
    nothing when logits are that large."""
    text = "max |difference| {:.3g}".format(worst)
    if largest > 0:
        text += " = {:.2g} of the largest |logit| ({:.3g})".format(worst / largest, largest)
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a main.py checkpoint or torchvision weights to ONNX (dynamic batch, opset 11 or 13).")
    parser.add_argument("checkpoint", help="main.py checkpoint (.pth.tar) or a bare state_dict (.pth)")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=11, choices=OPSETS,
                        help="ONNX opset (default 11: accepted by onnxruntime and every ATC with ONNX import)")
    parser.add_argument("--crop-size", type=int,
                        help="input height and width (default: the checkpoint's --val-crop-size, else 224)")
    parser.add_argument("--arch", choices=models.MODEL_NAMES, help="override the width read from the checkpoint")
    parser.add_argument("--ema", action="store_true", help="export the --model-ema weights saved in the checkpoint")
    parser.add_argument("--tolerance", "--atol", dest="tolerance", type=float, default=1e-4,
                        help="absolute part of the allowed |onnxruntime - torch| after export (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="relative part: allowed |onnxruntime - torch| is tolerance + rtol * |torch| "
                             "(default 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)
    if args.tolerance < 0 or args.rtol < 0:
        raise UserError("--tolerance and --rtol must be >= 0, got {:g} and {:g}".format(args.tolerance, args.rtol))
    if os.path.isdir(args.output):
        raise UserError("output {} is a folder; give a file name such as shufflenet.onnx".format(args.output))
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise UserError("output folder does not exist: {}".format(folder))
    return args


def main(argv=None):
    args = parse_args(argv)
    impl = shuffle_impl_for_export()
    model, meta = load_model(args.checkpoint, args.arch, args.ema, shuffle_impl=impl)
    bad = non_finite_tensors(model)
    if bad:
        raise UserError("{} has non-finite weights (NaN or inf) in {} tensor(s), first {}: refusing to export a "
                        "diverged model".format(args.checkpoint, len(bad), bad[0]))
    sizes = image_sizes(meta, val_crop_size=args.crop_size)
    crop = sizes["val_crop_size"]
    if crop < 32:
        raise UserError("--crop-size must be at least 32 (five stride-2 stages), got {}".format(crop))
    resize = sizes["val_resize_size"] if args.crop_size is None else default_resize(crop)
    metadata = {
        "arch": meta["arch"],
        "source": os.path.basename(args.checkpoint) + (" (EMA weights)" if args.ema else ""),
        "num_classes": str(model.fc.out_features),
        "preprocessing": "RGB; resize shorter side to {:d}, center crop {c}x{c}; (x/255 - mean) / std; "
                         "mean {}, std {}".format(resize, tuple(MEAN), tuple(STD), c=crop),
    }
    if meta.get("classes"):
        metadata["classes"] = json.dumps([str(c) for c in meta["classes"]])
    opset = usable_opset(args.opset)
    export(model, args.output, crop, opset, metadata)
    print("wrote {} ({}, opset {}, dynamic batch, input [batch, 3, {c}, {c}], channel shuffle: {})".format(
        args.output, meta["arch"], opset, impl, c=crop))
    if args.no_check:
        return 0
    compared = compare_with_onnxruntime(model, args.output, atol=args.tolerance, rtol=args.rtol, crop_size=crop)
    if compared is None:
        print("onnxruntime not installed: output not checked")
        return 0
    worst, largest, within = compared
    if not within:
        raise UserError("onnxruntime differs from torch: {} (beyond --tolerance {:g} + --rtol {:g} x |torch|)".format(
            describe_difference(worst, largest), args.tolerance, args.rtol))
    print("onnxruntime matches torch for batch 1 and 3: {}".format(describe_difference(worst, largest)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
