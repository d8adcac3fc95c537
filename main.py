"""Train or evaluate ShuffleNetV2 on ImageNet-style folders (Ascend NPU, NVIDIA GPU or CPU).

This file only parses the flags, launches the processes and wires the modules of `training/` together.
Bad input ends with one line `error: <problem>` and exit status 2; Ctrl-C / SIGTERM exit non-zero and leave the
last written checkpoint intact (checkpoints are written atomically).
"""
import argparse
import os
import random
import signal
import sys
import time

import numpy as np
import torch

import models
from training import checkpoint as ckpt
from training import device as devices
from training import distributed
from training import engine
from training import modelzoo_log as zlog
from training import schedule as schedules
from training.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, run_cli

IMAGENET_TRAIN_IMAGES = 1281167


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same clean stop as Ctrl-C."""


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
                   help="synthetic uint8 batches made on the device: no data set, for FPS measurements")
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
    g.add_argument("--lr-schedule", choices=schedules.SCHEDULES, default="cosine",
                   help="decay to 0 per iteration after the warm-up: cosine (ModelZoo) or linear (paper)")
    g.add_argument("--warm_up_epochs", "--warmup-epochs", dest="warm_up_epochs", type=float, default=0,
                   help="epochs of linear LR warm-up (per iteration)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=4e-5, help="weight decay")
    g.add_argument("--norm-weight-decay", type=float, default=None,
                   help="weight decay of normalization layers (default: --wd)")
    g.add_argument("--bias-weight-decay", type=float, default=None, help="weight decay of biases (default: --wd)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
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
    g.add_argument("-e", "--evaluate", action="store_true", help="only evaluate (the --resume file's weights)")
    g.add_argument("--resume", default="", metavar="FILE",
                   help="continue from a checkpoint (a bare state_dict loads weights only)")
    g.add_argument("--output-dir", "--workspace", dest="output_dir", default=".",
                   help="folder for checkpoints and metrics.jsonl")
    g.add_argument("--checkpoint-nameprefix", default="checkpoint",
                   help="checkpoint file name prefix: PREFIX.pth.tar, PREFIX_epochN.pth.tar")
    g.add_argument("--checkpoint-freq", type=int, default=0,
                   help="also keep PREFIX_epochN.pth.tar every N epochs (0: never)")
    return p


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
    if not args.dummy and not args.data:
        raise UserError("--data DIR is required (a folder with train/ and val/), or use --dummy")
    if args.seed is None:
        args.seed = random.SystemRandom().randint(0, 2 ** 31 - 1)


def data_module():
    """training.data, imported late so `--help` and flag errors do not wait for it."""
    from training import data
    return data


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def build_loaders(args, ctx, device):
    """(train_loader, sampler, val_loader, num_classes, classes) for this rank; synthetic with --dummy."""
    data = data_module()
    per_rank = args.batch_size // ctx.world_size
    if args.dummy:
        num_classes = args.num_classes or 1000
        steps = args.steps_per_epoch or IMAGENET_TRAIN_IMAGES // args.batch_size
        train = data.SyntheticLoader(per_rank, args.train_crop_size, num_classes, device, steps)
        val = data.SyntheticLoader(per_rank, args.val_crop_size, num_classes, device, max(1, min(10, steps)))
        return train, None, val, num_classes, None
    train_dir, val_dir = data.check_data_root(args.data)
    pin = device.type != "cpu"
    train, sampler = data.build_train_loader(train_dir, per_rank, args.workers, crop_size=args.train_crop_size,
                                             world_size=ctx.world_size, rank=ctx.rank, seed=args.seed,
                                             strict=args.strict_data, pin_memory=pin,
                                             scale=args.train_crop_scale)
    val = data.build_val_loader(val_dir, per_rank, args.workers, resize_size=args.val_resize_size,
                                crop_size=args.val_crop_size, world_size=ctx.world_size, rank=ctx.rank,
                                strict=args.strict_data, pin_memory=pin)
    classes = list(train.dataset.classes)
    found = len(classes)
    if args.num_classes is not None and args.num_classes < found:
        raise UserError("--num-classes {} is smaller than the {} class folders in {}".format(
            args.num_classes, found, train_dir))
    return train, sampler, val, args.num_classes or found, classes


def should_evaluate(epoch, args):
    """Every --eval-freq epochs, every epoch in the last 10% of the run, and after the last epoch."""
    return (epoch + 1) % args.eval_freq == 0 or epoch >= int(args.epochs * 0.9) or epoch + 1 == args.epochs


def checkpoint_path(args, suffix=""):
    return os.path.join(args.output_dir, "{}{}.pth.tar".format(args.checkpoint_nameprefix, suffix))


def run_worker(local_index, args, mode, world, device_type, available):
    """One training process: spawned with `local_index`, or the only process."""
    ctx = distributed.context_for(args, mode, world, local_index, available)
    if device_type == "cpu" and ctx.nprocs_per_node > 1 and not os.environ.get("OMP_NUM_THREADS"):
        # several CPU processes on one node: share the cores instead of each spinning on all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.nprocs_per_node))
    device = devices.set_device(device_type, ctx.device_index)
    backend = args.dist_backend or devices.default_backend(device_type)
    distributed.init_process_group(ctx, backend, distributed.init_method(args, mode))
    is_main = ctx.rank == 0
    log = engine.Logger(device_type, ctx.device_index, enabled=is_main)
    try:
        train_and_evaluate(args, ctx, device, device_type, log, is_main)
    finally:
        distributed.cleanup()


def train_and_evaluate(args, ctx, device, device_type, log, is_main):
    seed_everything(args.seed)  # same initial weights on every rank
    train_loader, sampler, val_loader, num_classes, classes = build_loaders(args, ctx, device)
    try:
        model = models.build_model(args.arch, num_classes=num_classes, pretrained=args.pretrained and not args.resume)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    resume = ckpt.load_checkpoint(args.resume, "--resume") if args.resume else None
    weights_only = resume is not None and (args.pretrained or args.evaluate or "state_dict" not in resume
                                           or torch.is_tensor(resume.get("state_dict")))
    if resume is not None:
        state_dict, _ = ckpt.split_weights(resume)
        ckpt.load_into_model(model, state_dict, args.resume)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    seed_everything(args.seed + ctx.rank)  # different augmentation streams per rank

    amp = devices.build_amp(args.amp, device_type, args.opt_level, args.loss_scale, log=log)
    apex_optimizers = amp.apex_optimizers  # Ascend apex fused SGD: only with apex amp O1/O2 on NPU
    optimizer = devices.build_optimizer(model, args.lr, args.momentum, args.weight_decay, args.norm_weight_decay,
                                        args.bias_weight_decay, apex_optimizers, device_type)
    ema = None
    if args.model_ema is not None:
        from training.ema import ModelEma
        ema = ModelEma(model, args.model_ema)
    model, optimizer = amp.prepare(model, optimizer)
    bare_model = model

    data = data_module()
    preprocess = data.DevicePreprocess(jitter=args.color_jitter, channels_last=args.channels_last,
                                     seed=args.seed + ctx.rank)  # own jitter stream per rank, like the seeds below
    criterion = engine.build_criterion(args.label_smoothing).to(device)
    metrics = engine.MetricsWriter(os.path.join(args.output_dir, "metrics.jsonl"), enabled=is_main,
                                   append=bool(args.resume) or args.evaluate)

    best_acc1 = 0.0
    start_epoch = args.start_epoch
    if resume is not None and not weights_only:
        start_epoch = int(resume.get("epoch", 0))
        best_acc1 = float(resume.get("best_acc1", 0.0))
        try:
            optimizer.load_state_dict(resume["optimizer"])
        except (ValueError, KeyError) as exc:  # parameter groups differ: other weight-decay flags or recipe
            raise UserError("--resume {}: its optimizer state does not fit these flags ({}); resume with the flags "
                            "of the original run (--wd, --norm-weight-decay, --bias-weight-decay, --recipe), or "
                            "add --pretrained to load only its weights".format(args.resume, exc)) from None
        amp.load_state_dict(resume.get("amp"))
        if ema is not None and resume.get("model_ema") is not None:
            ema.load_state_dict(resume["model_ema"])
        if ctx.world_size == 1:
            ckpt.set_rng_state(resume.get("rng"))
        else:
            seed_everything(args.seed + ctx.rank + 7919 * start_epoch)
        log("=> resumed from {} at epoch {} (best Acc@1 {:.3f})".format(args.resume, start_epoch, best_acc1))
    elif resume is not None:
        log("=> loaded weights from {}".format(args.resume))

    if ctx.world_size > 1:
        ids = [ctx.device_index] if device.type in ("cuda", "npu") else None
        model = torch.nn.parallel.DistributedDataParallel(bare_model, device_ids=ids)

    def evaluate(epoch):
        distributed.broadcast_buffers(bare_model)
        acc1 = engine.validate(bare_model, val_loader, criterion, amp, preprocess, device, log, metrics, epoch,
                               args.print_freq)[0]
        if ema is not None:
            distributed.broadcast_buffers(ema.module)
            engine.validate(ema.module, val_loader, criterion, amp, preprocess, device, log, metrics, epoch,
                            args.print_freq, tag=zlog.EMA_ACC_TAG)
        return acc1

    if args.evaluate:
        evaluate(start_epoch)
        return

    steps = len(train_loader)
    if args.steps_per_epoch:
        steps = min(steps, args.steps_per_epoch)
    if steps == 0:
        raise UserError("the training set has fewer images than one batch per process ({}): lower --batch-size"
                        .format(args.batch_size // ctx.world_size))
    lr_schedule = schedules.LrSchedule(args.lr, args.epochs, steps, args.warm_up_epochs, args.lr_schedule)
    accum = args.optimizer_batch_size // args.batch_size if args.benchmark == 1 else 1
    state = engine.TrainState(optimizer, criterion, amp, preprocess, lr_schedule, device, ctx.world_size,
                              args.print_freq, accum, ema, log, metrics)

    def save(epoch, acc1, evaluated):
        nonlocal best_acc1
        is_best = evaluated and acc1 > best_acc1
        best_acc1 = max(best_acc1, acc1) if evaluated else best_acc1
        if not is_main:
            return
        data_ = ckpt.build_checkpoint(epoch + 1, args.arch, bare_model.state_dict(), optimizer.state_dict(),
                                      best_acc1, vars(args), classes, amp.state_dict(),
                                      ema.state_dict() if ema is not None else None)
        ckpt.atomic_save(data_, checkpoint_path(args))
        if args.checkpoint_freq and (epoch + 1) % args.checkpoint_freq == 0:
            ckpt.atomic_save(data_, checkpoint_path(args, "_epoch{}".format(epoch + 1)))
        if is_best:
            ckpt.atomic_save(data_, os.path.join(args.output_dir, "model_best.pth.tar"))

    acc1 = 0.0
    for epoch in range(start_epoch, args.epochs):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        preprocess.set_epoch(epoch)  # jitter factors keyed by (seed, epoch): exact resume with any --workers
        engine.train_one_epoch(model, train_loader, state, epoch, steps)
        evaluated = should_evaluate(epoch, args)
        if evaluated:
            acc1 = evaluate(epoch)
        save(epoch, acc1, evaluated)

    if args.bn_recalibrate:
        from training.ema import recalibrate_bn
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(args.epochs)
        preprocess.set_epoch(args.epochs)

        def prepare(batch):
            return preprocess(batch[0].to(device, non_blocking=True), True)
        for target in [bare_model] + ([ema.module] if ema is not None else []):
            used = recalibrate_bn(target, train_loader, prepare, args.bn_recalibrate)
        log("=> BatchNorm statistics recomputed over {} batches".format(used))
        save(args.epochs - 1, evaluate(args.epochs), True)


def _raise_interrupted(signum, frame):
    raise Interrupted()


def _spawned(local_index, args, mode, world, device_type, available):
    """Entry of a spawned process: same error handling as the parent, exit codes reach the parent."""
    signal.signal(signal.SIGTERM, _raise_interrupted)
    sys.exit(run_cli(lambda _: run_worker(local_index, args, mode, world, device_type, available)))


def spawn(args, nprocs, mode, world, device_type, available):
    """--multiprocessing-distributed: one process per device; stop them all if this one is interrupted."""
    import torch.multiprocessing as mp

    if (args.world_size or 1) <= 1 and not args.dist_url and args.port is None and not os.environ.get("MASTER_PORT"):
        args.port = distributed.free_port()
    context = mp.start_processes(_spawned, args=(args, mode, world, device_type, available), nprocs=nprocs,
                                 join=False, start_method="spawn")
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        code = exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1
        print("error: process {} of {} exited with code {}".format(exc.error_index, nprocs, exc.exit_code),
              file=sys.stderr, flush=True)
        _stop(context)
        return code
    except BaseException:
        _stop(context)
        raise
    return 0


def _stop(context):
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join(30)


def main(argv=None):
    """Parse, check, launch. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread (main() called from a thread): keep the default handling
        previous = None
    started = time.time()
    try:
        check_args(args)
        device_type = devices.resolve_device_type(args.device)
        available = devices.device_count(device_type)
        mode, nprocs, world = distributed.plan(args, available)
        if not args.dummy:
            data_module().check_data_root(args.data)
        if args.resume:
            ckpt.load_checkpoint(args.resume, "--resume")
        if mode == "spawn":
            return spawn(args, nprocs, mode, world, device_type, available)
        run_worker(0, args, mode, world, device_type, available)
        return 0
    except UserError as exc:
        print("error: {}".format(exc), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        signame = "SIGTERM" if isinstance(exc, Interrupted) else "Ctrl-C"
        print("error: interrupted by {} after {:.0f}s; the last written checkpoint in {} is intact (use --resume)"
              .format(signame, time.time() - started, os.path.abspath(args.output_dir)), file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
