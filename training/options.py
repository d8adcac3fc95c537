"""main.py's command line: the flags (ModelZoo and torchvision spellings), `--recipe` defaults, up-front checks.

`parse_args(argv)` applies the recipe's defaults before the final parse (explicit flags win) and `check_args(args)`
refuses bad values with a UserError before any process, data or device is touched.
"""
import argparse
import random

import models
from training import device as devices
from training import distributed
from training import optim
from training import recipes
from training.errors import UserError

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" once: not where the help text already says its default, nor for switches and flags
    whose default is "not given" (None, "")."""

    def _get_help_string(self, action):
        if "(default" in action.help or action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


def build_parser():
    p = argparse.ArgumentParser(
        description="ShuffleNetV2 training (Ascend NPU / NVIDIA GPU / CPU), ModelZoo-compatible flags and logs.",
        formatter_class=HelpFormatter)
    p.add_argument("--recipe", choices=recipes.NAMES, default=None,
                   help="start from a named set of defaults (training/recipes.py); flags given here still win")
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="data set folder with train/ and val/ ImageFolders (not needed with --dummy)")
    g.add_argument("-a", "--arch", default="shufflenet_v2_x1_0",
                   help="model: " + " | ".join(models.MODEL_NAMES))
    g.add_argument("--num-classes", type=int, default=None,
                   help="classes of the classifier (default: class folders in train/, 1000 with --dummy)")
    g.add_argument("--pretrained", action="store_true",
                   help="start from pretrained weights: with --resume FILE load only FILE's weights, else the "
                        "model registry's local weights file")
    g.add_argument("-j", "--workers", type=int, default=4, help="data loading worker processes per rank")
    g.add_argument("--dummy", action="store_true",
                   help="synthetic uint8 batches made on the device: no data set, for FPS measurements "
                        "(no validation)")
    g.add_argument("--train-crop-size", type=int, default=224, help="RandomResizedCrop size for training")
    g.add_argument("--train-crop-scale", type=float, nargs=2, default=(0.08, 1.0), metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area fraction range (ImageNet: 0.08 1.0; raise MIN for tiny images)")
    g.add_argument("--val-resize-size", type=int, default=256, help="validation resize of the shorter side")
    g.add_argument("--val-crop-size", type=int, default=224, help="validation center crop size")
    g.add_argument("--color-jitter", type=float, default=0.2,
                   help="brightness/contrast/saturation jitter strength on the device (0: off)")
    g.add_argument("--strict-data", action="store_true",
                   help="stop at an unreadable image instead of replacing it and counting it in bad_images")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster with AMP)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=240, help="number of epochs")
    g.add_argument("--start-epoch", type=int, default=0, help="epoch to start at (--resume sets it)")
    g.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap on iterations per epoch (quick and performance runs); the LR schedule follows it")
    g.add_argument("-b", "--batch-size", type=int, default=1024,
                   help="global batch size over all processes (must divide by the world size)")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=0.5, help="peak learning rate")
    g.add_argument("--lr-schedule", choices=optim.SCHEDULES, default="cosine",
                   help="decay to 0 per iteration after the warm-up: cosine (ModelZoo) or linear (paper)")
    g.add_argument("--warm_up_epochs", "--warmup-epochs", dest="warm_up_epochs", type=float, default=0,
                   help="epochs of linear LR warm-up (per iteration)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=4e-5, help="weight decay")
    g.add_argument("--norm-weight-decay", type=float, default=None,
                   help="weight decay of normalization layers (default: --wd)")
    g.add_argument("--bias-weight-decay", type=float, default=None, help="weight decay of biases (default: --wd)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    # ModelZoo's name for gradient accumulation; the code calls it optim.gradient_accumulation_steps
    g.add_argument("--benchmark", type=int, default=0, choices=(0, 1),
                   help="1: accumulate gradients up to --optimizer-batch-size per optimizer step")
    g.add_argument("--optimizer-batch-size", type=int, default=2048,
                   help="images per optimizer step with --benchmark 1 (a multiple of --batch-size)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, stored in args)")
    g.add_argument("--model-ema", type=float, nargs="?", const=0.9998, default=None, metavar="DECAY",
                   help="keep and evaluate an exponential moving average of the weights (decay per step; "
                        "0.9998 when given without a value)")
    g.add_argument("--bn-recalibrate", type=int, default=0, metavar="N",
                   help="after training, recompute BatchNorm statistics over N training batches, then eval + save")

    g = p.add_argument_group("precision and device")
    g.add_argument("--device", choices=devices.DEVICE_CHOICES, default="auto",
                   help="auto: npu if torch_npu works, else cuda, else cpu; gpu = cuda")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision: apex amp when installed (npu/cuda), else native autocast "
                        "(fp16 + GradScaler on npu/cuda, bf16 on cpu)")
    g.add_argument("--opt-level", default="O2", help="apex opt level O1/O2 (native AMP: autocast either way)")
    g.add_argument("--loss-scale", default=None,
                   help="static loss scale (e.g. 64) or -1 for dynamic (default: dynamic)")
    g.add_argument("--gpu", type=int, default=None, help="device id of a single-process run")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (torch >= 2.0; checkpoints, EMA and validation use the "
                        "uncompiled model)")
    g.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend with --compile (e.g. aot_eager or eager to rule out inductor)")

    g = p.add_argument_group("distributed")
    g.add_argument("--multiprocessing-distributed", action="store_true",
                   help="spawn one process per device of --device-list / --device_num (CPU: gloo processes)")
    g.add_argument("--world-size", type=int, default=-1,
                   help="number of nodes with --multiprocessing-distributed or --local_rank, else processes")
    g.add_argument("--rank", type=int, default=-1, help="node rank (process rank without spawning)")
    g.add_argument("--dist-url", default="",
                   help="init method, e.g. tcp://10.0.0.1:29688 (default: from --addr/--port)")
    g.add_argument("--dist-backend", default=None, help="hccl / nccl / gloo (default: from the device)")
    g.add_argument("--addr", default=None, help="master address (default: MASTER_ADDR or 127.0.0.1)")
    g.add_argument("--port", type=int, default=None,
                   help="master port (default: MASTER_PORT; a free port for single-node spawns, else {})".format(
                       distributed.DEFAULT_PORT))
    g.add_argument("--device-list", default="", help="device ids of this node, e.g. 0,1,2,3")
    g.add_argument("--device_num", "--device-num", dest="device_num", type=int, default=-1,
                   help="number of devices (processes) per node")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1,
                   help="rank on this node, for launchers that start each process themselves")

    g = p.add_argument_group("logging, evaluation and checkpoints")
    g.add_argument("-p", "--print-freq", type=int, default=10, help="print a step line every N iterations")
    g.add_argument("-ef", "--eval-freq", type=int, default=5,
                   help="evaluate every N epochs (and every epoch in the last 10%% and after the last one)")
    g.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the weights of --resume FILE or --pretrained")
    g.add_argument("--resume", default="", metavar="FILE",
                   help="continue from a checkpoint (a bare state_dict loads weights only); auto: from the newest "
                        "complete checkpoint in --output-dir, or start fresh when there is none")
    g.add_argument("--output-dir", "--workspace", dest="output_dir", default=".",
                   help="folder for checkpoints and metrics.jsonl")
    g.add_argument("--checkpoint-nameprefix", default="checkpoint",
                   help="checkpoint file name prefix: PREFIX.pth.tar, PREFIX_epochN.pth.tar")
    g.add_argument("--checkpoint-freq", type=int, default=0,
                   help="also keep PREFIX_epochN.pth.tar every N epochs (0: never)")
    g.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also write metrics.jsonl's numbers as TensorBoard scalars into DIR (rank 0; needs the "
                        "tensorboard package)")
    return p


def parse_args(argv=None):
    """The flags of `argv`, with `--recipe NAME`'s defaults under them (an unknown name is the parser's error)."""
    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--recipe", default=None)
    name = first.parse_known_args(argv)[0].recipe
    if name in recipes.NAMES:
        parser.set_defaults(**recipes.defaults(name))
    return parser.parse_args(argv)


def given_dests(argv):
    """The argparse dests that `argv` sets explicitly (whatever spelling: --lr or --learning-rate)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def check_args(args):
    """Flag checks that need no data or devices (run before any process is started)."""
    if args.arch not in models.MODEL_NAMES:
        raise UserError("unknown --arch {!r}; choose from: {}".format(args.arch, ", ".join(models.MODEL_NAMES)))
    positive = [("--batch-size", args.batch_size), ("--epochs", args.epochs), ("--print-freq", args.print_freq),
                ("--eval-freq", args.eval_freq), ("--train-crop-size", args.train_crop_size),
                ("--val-resize-size", args.val_resize_size), ("--val-crop-size", args.val_crop_size)]
    if args.steps_per_epoch is not None:
        positive.append(("--steps-per-epoch", args.steps_per_epoch))
    if args.num_classes is not None:
        positive.append(("--num-classes", args.num_classes))
    for name, value in positive:
        if value <= 0:
            raise UserError("{} must be positive, got {}".format(name, value))
    if args.workers < 0:
        raise UserError("--workers must be >= 0, got {}".format(args.workers))
    if not 0.0 <= args.label_smoothing < 1.0:
        raise UserError("--label-smoothing must be in [0, 1), got {}".format(args.label_smoothing))
    low, high = args.train_crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise UserError("--train-crop-scale must satisfy 0 < MIN <= MAX <= 1, got {:g} {:g}".format(low, high))
    if args.bn_recalibrate < 0:
        raise UserError("--bn-recalibrate must be >= 0, got {}".format(args.bn_recalibrate))
    if args.benchmark == 1 and args.optimizer_batch_size % args.batch_size != 0:
        raise UserError("--optimizer-batch-size {} is not a multiple of --batch-size {}".format(
            args.optimizer_batch_size, args.batch_size))
    if args.evaluate and not (args.resume or args.pretrained):
        raise UserError("--evaluate needs weights to score: give --resume FILE or --pretrained")
    if args.evaluate and args.dummy:
        raise UserError("--evaluate --dummy: synthetic data has no accuracy to measure; give --data DIR")
    if not args.dummy and not args.data:
        raise UserError("--data DIR is required (a folder with train/ and val/), or use --dummy")
    if args.seed is None:
        args.seed = random.SystemRandom().randint(0, 2 ** 31 - 1)
