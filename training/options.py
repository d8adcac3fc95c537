"""main.py's command line: the flags (ModelZoo and torchvision spellings), `--recipe` defaults, up-front checks.

Each numeric flag declares its allowed values in its `type=` (training/cli.py's Number), which `--help` shows.
`parse_args(argv)` applies the recipe's defaults before the final parse (explicit flags win) and refuses a value
out of range; `check_args(args)` refuses flags that contradict each other. Both raise a UserError before any process,
data or device is touched.
"""
import argparse
import difflib
import math
import os
import random

import models
from training import device as devices
from training.data import inputs
from training.launch import modelzoo, modes
from training import optim
from training import precision
from training import recipes
from training.cli import Number, Parser
from training.errors import UserError


MIN_CROP_SIZE = 32  # ShuffleNetV2 halves the image 5 times: a smaller crop leaves less than one pixel at stage 4
MAX_SEED = 2 ** 32 - 1  # numpy seeds are 32 bits (torch takes 64)
NOT_GIVEN = -1  # the distributed flags' "not given" (torchvision's spelling)


class HelpFormatter(argparse.HelpFormatter):
    """Adds the allowed values of a numeric flag (its `Number` type) and "default: X" to its help, the default only
    where the help text does not already say it and for flags whose default is not "not given" (None, False, "")."""

    def _get_help_string(self, action):
        notes = [action.type.describe()] if isinstance(action.type, Number) else []
        unset = any(action.default is empty for empty in (None, False, "", argparse.SUPPRESS))
        if "(default" not in action.help and not unset:
            notes.append("default: %(default)s")
        return "{} ({})".format(action.help, "; ".join(notes)) if notes else action.help


DEFAULT_OUTPUT_DIR = "output"


def build_parser():
    p = Parser(
        description="ShuffleNetV2 training (Ascend NPU / NVIDIA GPU / CPU), ModelZoo-compatible flags and logs.",
        formatter_class=HelpFormatter)
    p.add_argument("--recipe", choices=recipes.NAMES, default=None,
                   help="start from a named set of defaults (training/recipes.py); flags given here still win")
    p.add_argument("--check-only", action="store_true",
                   help="check flags, devices, data and --resume, then exit 0 without training (the launchers use it)")
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="data set folder with train/ and val/ ImageFolders (not needed with --dummy)")
    g.add_argument("-a", "--arch", default="shufflenet_v2_x1_0",
                   help="model: " + " | ".join(models.MODEL_NAMES))
    g.add_argument("--num-classes", type=Number(int, 1), default=None,
                   help="classes of the classifier (default: class folders in train/, 1000 with --dummy)")
    g.add_argument("--pretrained", action="store_true",
                   help="start from pretrained weights: with --resume FILE load only FILE's weights, else the "
                        "model registry's local weights file")
    g.add_argument("-j", "--workers", type=Number(int, 0), default=4, help="data loading worker processes per rank")
    g.add_argument("--data-backend", choices=("cpu", "dali"), default="cpu",
                   help="cpu: decode in --workers processes; dali: NVIDIA DALI decodes on the GPU (--workers threads; "
                        "docs/gpu.md)")
    g.add_argument("--dummy", action="store_true",
                   help="synthetic uint8 batches made on the device: no data set, for FPS measurements "
                        "(no validation; {} steps per epoch unless --steps-per-epoch)".format(
                            inputs.DUMMY_STEPS_PER_EPOCH))
    g.add_argument("--train-crop-size", type=Number(int, MIN_CROP_SIZE), default=224,
                   help="RandomResizedCrop size for training")
    g.add_argument("--train-crop-scale", type=Number(float, 0, 1, low_open=True), nargs=2, default=(0.08, 1.0),
                   metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area fraction range (ImageNet: 0.08 1.0; raise MIN for tiny images)")
    g.add_argument("--val-resize-size", type=Number(int, MIN_CROP_SIZE), default=256,
                   help="validation resize of the shorter side")
    g.add_argument("--val-crop-size", type=Number(int, MIN_CROP_SIZE), default=224, help="validation center crop size")
    g.add_argument("--color-jitter", type=Number(float, 0, 1), default=0.2,
                   help="brightness/contrast/saturation jitter strength on the device (0: off)")
    g.add_argument("--strict-data", action="store_true",
                   help="stop at an unreadable image instead of replacing it and counting it in bad_images")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster with AMP)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=Number(int, 1), default=240, help="number of epochs")
    g.add_argument("--start-epoch", type=Number(int, 0), default=0, help="epoch to start at (--resume sets it)")
    g.add_argument("--steps-per-epoch", type=Number(int, 1), default=None,
                   help="cap on iterations per epoch (quick and performance runs); the LR schedule follows it")
    g.add_argument("-b", "--batch-size", type=Number(int, 1), default=1024,
                   help="global batch size over all processes (must divide by the world size)")
    g.add_argument("--lr", "--learning-rate", dest="lr", type=Number(float, 0, low_open=True), default=0.5,
                   help="peak learning rate")
    g.add_argument("--lr-schedule", choices=optim.SCHEDULES, default="cosine",
                   help="decay to 0 per iteration after the warm-up: cosine (ModelZoo) or linear (paper)")
    g.add_argument("--warm_up_epochs", "--warmup-epochs", dest="warm_up_epochs", type=Number(float, 0), default=0,
                   help="epochs of linear LR warm-up (per iteration)")
    g.add_argument("--momentum", type=Number(float, 0, 1, high_open=True), default=0.9, help="SGD momentum")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=Number(float, 0), default=4e-5,
                   help="weight decay")
    g.add_argument("--norm-weight-decay", type=Number(float, 0), default=None,
                   help="weight decay of normalization layers (default: --wd)")
    g.add_argument("--bias-weight-decay", type=Number(float, 0), default=None,
                   help="weight decay of biases (default: --wd)")
    g.add_argument("--label-smoothing", type=Number(float, 0, 1, high_open=True), default=0.0,
                   help="label smoothing of the cross-entropy")
    # ModelZoo's name for gradient accumulation; the code calls it optim.gradient_accumulation_steps
    g.add_argument("--benchmark", type=int, default=0, choices=(0, 1),
                   help="1: accumulate gradients up to --optimizer-batch-size per optimizer step")
    g.add_argument("--optimizer-batch-size", type=Number(int, 1), default=2048,
                   help="images per optimizer step with --benchmark 1 (a multiple of --batch-size)")
    g.add_argument("--seed", type=Number(int, 0, MAX_SEED), default=None,
                   help="random seed (default: a random one, stored in args)")
    g.add_argument("--model-ema", type=Number(float, 0, 1, low_open=True, high_open=True), nargs="?", const=0.9998,
                   default=None, metavar="DECAY",
                   help="keep and evaluate an exponential moving average of the weights (decay per step; "
                        "0.9998 when given without a value)")
    g.add_argument("--bn-recalibrate", type=Number(int, 0), default=0, metavar="N",
                   help="after training, recompute BatchNorm statistics over N training batches, then eval + save")

    g = p.add_argument_group("precision and device")
    g.add_argument("--device", choices=devices.DEVICE_CHOICES, default="auto",
                   help="auto: npu if torch_npu works, else cuda, else cpu; gpu = cuda")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision: apex amp when installed (npu/cuda), else native autocast (fp16 + "
                        "GradScaler on npu/cuda; on a CPU bf16 where it has native bf16 (avx512_bf16/amx_bf16), "
                        "else fp32)")
    g.add_argument("--amp-dtype", choices=precision.AMP_DTYPES, default="auto",
                   help="with --amp: auto (as above) or bfloat16 (bf16 autocast on any device, also on a CPU "
                        "without native bf16, where it is emulated and slow)")
    g.add_argument("--opt-level", default="O2", help="apex opt level O1/O2 (native AMP: autocast either way)")
    g.add_argument("--loss-scale", default=None,
                   help="static loss scale (e.g. 64) or -1 for dynamic (default: dynamic)")
    g.add_argument("--gpu", type=Number(int, 0), default=None, help="device id of a single-process run")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (torch >= 2.0; checkpoints, EMA and validation use the "
                        "uncompiled model)")
    g.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend with --compile (e.g. aot_eager or eager to rule out inductor)")

    g = p.add_argument_group("distributed")
    g.add_argument("--multiprocessing-distributed", action="store_true",
                   help="spawn one process per device of --device-list / --device_num (CPU: gloo processes)")
    g.add_argument("--world-size", type=Number(int, 1, also=[NOT_GIVEN]), default=-1,
                   help="number of nodes with --multiprocessing-distributed or --local_rank, else processes")
    g.add_argument("--rank", type=Number(int, 0, also=[NOT_GIVEN]), default=-1,
                   help="node rank (process rank without spawning)")
    g.add_argument("--dist-url", default="",
                   help="init method, e.g. tcp://10.0.0.1:29688 (default: from --addr/--port)")
    g.add_argument("--dist-backend", default=None, help="hccl / nccl / gloo (default: from the device)")
    g.add_argument("--addr", default=None, help="master address (default: MASTER_ADDR or 127.0.0.1)")
    g.add_argument("--port", type=Number(int, 1, 65535), default=None,
                   help="master port (default: MASTER_PORT; a free port for single-node spawns, else {})".format(
                       modes.DEFAULT_PORT))
    g.add_argument("--device-list", default="", help="device ids of this node, e.g. 0,1,2,3")
    g.add_argument("--device_num", "--device-num", dest="device_num", type=Number(int, 1, also=[NOT_GIVEN]), default=-1,
                   help="number of devices (processes) per node")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=Number(int, 0, also=[NOT_GIVEN]), default=-1,
                   help="rank on this node, for launchers that start each process themselves")
    g.add_argument("--dist-timeout", type=Number(float, 0, low_open=True), default=modes.DEFAULT_TIMEOUT_SECONDS,
                   metavar="SECONDS",
                   help="how long a process waits for the others to join the process group, and for a collective, "
                        "before it stops with an error")

    g = p.add_argument_group("logging, evaluation and checkpoints")
    g.add_argument("-p", "--print-freq", type=Number(int, 1), default=10, help="print a step line every N iterations")
    g.add_argument("-ef", "--eval-freq", type=Number(int, 1), default=5,
                   help="evaluate every N epochs (and every epoch in the last 10%% and after the last one)")
    g.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the weights of --resume FILE or --pretrained")
    g.add_argument("--resume", default="", metavar="FILE",
                   help="continue from a checkpoint (a bare state_dict loads weights only); auto: from the newest "
                        "complete checkpoint in --output-dir, or start fresh when there is none")
    g.add_argument("--output-dir", "--workspace", dest="output_dir", default=DEFAULT_OUTPUT_DIR,
                   help="folder for checkpoints and metrics.jsonl, made when missing (default: output/ in the "
                        "current folder, as timm's ./output; the repository ignores it in git)")
    g.add_argument("--checkpoint-nameprefix", default="checkpoint",
                   help="checkpoint file name prefix: PREFIX.pth.tar, PREFIX_epochN.pth.tar")
    g.add_argument("--checkpoint-freq", type=Number(int, 0), default=0,
                   help="also keep PREFIX_epochN.pth.tar every N epochs (0: never)")
    g.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also write metrics.jsonl's numbers as TensorBoard scalars into DIR (rank 0; needs the "
                        "tensorboard package)")
    return p


def parse_args(argv=None):
    """The flags of `argv`, with `--recipe NAME`'s defaults under them (an unknown name is the parser's error)."""
    parser = build_parser()
    first = Parser(add_help=False)
    first.add_argument("--recipe", default=None)
    name = first.parse_known_args(argv)[0].recipe
    if name in recipes.NAMES:
        parser.set_defaults(**recipes.defaults(name))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        known = [flag for action in parser._actions for flag in action.option_strings]
        if modelzoo.started_by_launcher():  # the user typed the launcher's flags: suggest those first
            known = modelzoo.launcher_flags() + known
        raise UserError(unknown_arguments_message(unknown, known))
    return args


def unknown_arguments_message(unknown, known):
    """'unknown flag --batchsize=8 (did you mean --batch_size?)' for parse_known_args's leftovers `unknown`; a
    suggestion is the closest of the `known` flags (earlier ones win ties) when it is close."""
    flags = [token for token in unknown if token.startswith("-")]
    if not flags:
        return "unexpected argument{} {} (every value follows its flag)".format("s" * (len(unknown) > 1),
                                                                               " ".join(unknown))
    described = []
    for token in flags:
        suggestion = closest_flag(token.split("=", 1)[0], known)
        described.append(token + (" (did you mean {}?)".format(suggestion) if suggestion else ""))
    return "unknown flag{} {}".format("s" * (len(flags) > 1), ", ".join(described))


def closest_flag(flag, known, cutoff=0.6):
    """The flag of `known` most like `flag` (difflib's ratio of the names without dashes, `_` and `-` alike) if
    it reaches `cutoff`, earlier entries winning ties; else None."""
    def name(text):
        return text.lstrip("-").replace("_", "-")

    best, best_score = None, cutoff
    for candidate in known:
        score = difflib.SequenceMatcher(None, name(flag), name(candidate)).ratio()
        if score > best_score or (best is None and score == best_score):
            best, best_score = candidate, score
    return best


def given_dests(argv):
    """The argparse dests that `argv` sets explicitly (whatever spelling: --lr or --learning-rate)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def check_consistency(args):
    """Flags that must agree with each other."""
    low, high = args.train_crop_scale
    if low > high:
        raise UserError("--train-crop-scale must satisfy 0 < MIN <= MAX <= 1, got {:g} {:g}".format(low, high))
    if args.start_epoch >= args.epochs:
        raise UserError("--start-epoch {} leaves nothing to train with --epochs {}: it must be below --epochs".format(
            args.start_epoch, args.epochs))
    if args.val_resize_size < args.val_crop_size:
        raise UserError("--val-resize-size {} is smaller than --val-crop-size {}".format(args.val_resize_size,
                                                                                        args.val_crop_size))
    if args.benchmark == 1 and args.optimizer_batch_size % args.batch_size != 0:
        raise UserError("--optimizer-batch-size {} is not a multiple of --batch-size {}".format(
            args.optimizer_batch_size, args.batch_size))
    if NOT_GIVEN not in (args.world_size, args.rank) and args.rank >= args.world_size:
        raise UserError("--rank {} is outside --world-size {}".format(args.rank, args.world_size))
    if args.loss_scale is not None and not _finite_or_word(args.loss_scale):
        raise UserError("--loss-scale must be a finite number or -1 for dynamic, got {}".format(args.loss_scale))


def _finite_or_word(text):
    """False for 'nan' / 'inf'; other words and numbers are precision.py's to judge."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return True


def check_output_dir(path):
    """--output-dir must be a folder this process can write in, or creatable (nothing is created here)."""
    folder = os.path.abspath(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError("--output-dir {}: {} is a file, not a folder".format(path, existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "cannot write in" if existing == folder else "cannot create folders in"
        raise UserError("--output-dir {}: this user {} {}".format(path, what, existing))


def check_args(args):
    """Flag checks that need no data or devices (run before any process is started or any file written)."""
    if args.arch not in models.MODEL_NAMES:
        raise UserError("unknown --arch {!r}; choose from: {}".format(args.arch, ", ".join(models.MODEL_NAMES)))
    check_consistency(args)
    if args.amp_dtype != "auto" and not args.amp:
        raise UserError("--amp-dtype {} needs --amp".format(args.amp_dtype))
    if args.evaluate and not (args.resume or args.pretrained):
        raise UserError("--evaluate needs weights to score: give --resume FILE or --pretrained")
    if args.evaluate and args.dummy:
        raise UserError("--evaluate --dummy: synthetic data has no accuracy to measure; give --data DIR")
    if not args.dummy and not args.data:
        raise UserError("--data DIR is required (a folder with train/ and val/), or use --dummy")
    check_output_dir(args.output_dir)
    if args.seed is None:
        args.seed = random.SystemRandom().randint(0, 2 ** 31 - 1)


# ----------------------------------------------------------------------------------------------------------
# Warnings about a learning rate that no longer fits the run (the default --lr was tuned for one global
# batch; the linear scaling rule lr * batch / tuned_batch is the remedy the warning names).

DEFAULT_TUNED_BATCH = 1024  # the batch of main.py's default --lr 0.5 (the paper's recipe)


def tuned_batch(recipe):
    """The global batch the learning rate of `recipe` (None: main.py's defaults) was tuned for."""
    if recipe:
        values = recipes.defaults(recipe)
        if "lr" in values and "batch_size" in values:
            return values["batch_size"]
    return DEFAULT_TUNED_BATCH


def lr_warnings(args, given):
    """`warning: ...` lines for these flags; `given` is the set of argparse dests given on the command line
    (options.given_dests)."""
    lines = []
    batch = tuned_batch(getattr(args, "recipe", None))
    if "lr" not in given and args.batch_size != batch:
        lines.append("warning: --lr {:g} was tuned for batch {}, this run uses --batch-size {}: the linearly scaled "
                     "value is --lr {:g} (give --lr to choose)".format(args.lr, batch, args.batch_size,
                                                                        args.lr * args.batch_size / batch))
    # a recipe's own pair is the recipe's choice (modelzoo_performance_8p: 5 warm-up epochs in 1); a flag given
    # here makes it the user's
    if args.warm_up_epochs > 0 and args.warm_up_epochs >= args.epochs and given & {"warm_up_epochs", "epochs"}:
        lines.append("warning: --warm_up_epochs {:g} >= --epochs {}: the whole run is warm-up, the learning rate "
                     "never reaches --lr {:g}".format(args.warm_up_epochs, args.epochs, args.lr))
    return lines
