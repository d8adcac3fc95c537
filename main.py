"""Train or evaluate ShuffleNetV2 on ImageNet-style folders (Ascend NPU, NVIDIA GPU or CPU).

This file is the table of contents of a run: parse the flags, plan the launch, then build data, model, precision,
optimizer, schedule and EMA, resume, loop over the epochs and save. Each step lives in one module of training/
(docs/architecture.md). Bad input ends with one line `error: <problem>` and exit status 2; Ctrl-C / SIGTERM exit
130 and say which checkpoint is on disk (checkpoints are written atomically).
"""
import os
import signal
import sys
import time

from training import options  # first: importing training prepares the torch import (training/__init__.py)

import torch

import models
from training import device as devices
from training import engine, optim, precision, seeding
from training.bn_recalibration import recalibrate_models
from training.checkpoints import auto_resume, files
from training.checkpoints import checkpoint as ckpt
from training.data import dali, inputs, loaders
from training.ema import ModelEma
from training.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from training.launch import modes, process_group, supervisor
from training.logs import tensorboard_sink, writers

SPAWN_FLAG = "--multiprocessing-distributed"


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same clean stop as Ctrl-C."""


def main(argv=None):
    """Run, then leave the process group (if this process joined one) once the exit status is settled and said.
    Returns the exit status."""
    code = 1  # an exception escaping run(): Python prints its traceback and exits 1
    try:
        code = run(argv)
        return code
    finally:
        process_group.leave(exit_code=code)


def run(argv=None):
    """Parse, check, plan the launch, run. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = options.parse_args(argv)  # a value out of its flag's range is one error line too
    except UserError as exc:
        return print_error(exc, EXIT_USER_ERROR)
    started, launch = time.time(), None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread (main() called from a thread): keep the default handling
        previous = None
    try:
        options.check_args(args)
        if args.tensorboard:
            tensorboard_sink.summary_writer_class()  # a missing package stops here, before anything is written
        if args.compile:
            precision.check_available()
        device_type = devices.resolve_device_type(args.device)
        if args.data_backend == "dali" and not args.dummy:
            dali.check_available(device_type)  # one error line with the install command, before any process starts
        precision.check_flags(args.amp, device_type, args.opt_level, args.loss_scale, args.amp_dtype)
        launch = modes.plan(args, devices.device_count(device_type))
        notes = options.lr_warnings(args, options.given_dests(argv))
        precision_note = precision.choose_dtype(args.amp, device_type, args.amp_dtype)[1]
        if precision_note:
            notes.append(precision_note)
        if args.resume == "auto":
            notes.append(auto_resume.resolve(args))
        if launch.mode != "spawn" and _rank(launch) == "0":  # said once: by rank 0, not by a spawning parent
            for line in notes:
                print(line, flush=True)
        if not args.dummy:
            loaders.check_data_root(args.data)
        if args.check_only:
            return check_only(args, launch)
        if launch.mode == "spawn":
            return start_ranks(args, argv, launch, started)
        with modes.environment(launch.ranks[0]):
            run_process(args, device_type)
        return 0
    except UserError as exc:
        return print_error(exc, EXIT_USER_ERROR)
    except process_group.RendezvousInterrupted as exc:  # every waiting process says what it waited for
        return print_error(exc, EXIT_INTERRUPTED)
    except KeyboardInterrupt as exc:
        if _rank(launch) == "0":  # the writer of the checkpoints speaks; the other ranks stop quietly
            report_interrupt(args, exc, started)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def print_error(exc, code):
    """`error: <exc>` on stderr; returns the exit status `code`."""
    print("error: {}".format(exc), file=sys.stderr, flush=True)
    return code


def _rank(launch):
    """This process's RANK (a string) as planned, "0" for a single process."""
    return (launch.ranks[0] if launch else {}).get("RANK", os.environ.get("RANK", "0"))


def _raise_interrupted(signum, frame):
    raise Interrupted()


def report_interrupt(args, exc, started):
    signame = {Interrupted: " by SIGTERM", KeyboardInterrupt: " by Ctrl-C"}.get(type(exc), "")
    print("error: interrupted{} after {:.0f}s; {}".format(signame, time.time() - started, ckpt.describe_on_disk(
        args.output_dir, args.checkpoint_nameprefix)), file=sys.stderr, flush=True)


def start_ranks(args, argv, launch, started):
    """--multiprocessing-distributed: this command again, once per rank, with its torchrun variables (the seed
    drawn here, so that every rank starts from the same weights)."""
    if args.resume:
        ckpt.load_checkpoint(args.resume, "--resume")  # one error line here rather than one per rank
    rank_argv = [a for a in argv if not (len(a) > 4 and SPAWN_FLAG.startswith(a))] + ["--seed", str(args.seed)]
    command = [sys.executable, os.path.abspath(__file__)] + rank_argv
    code = supervisor.supervise([supervisor.ProcessSpec(command, dict(os.environ, **env)) for env in launch.ranks])
    if code == EXIT_INTERRUPTED:
        report_interrupt(args, None, started)
    return code


def check_only(args, launch):
    """--check-only: --resume loads and every process gets one full training batch; nothing is written."""
    if args.resume:
        ckpt.load_checkpoint(args.resume, "--resume")
    if not (args.dummy or args.evaluate):
        samples, _ = loaders.scan_folder(os.path.join(args.data, "train"))
        inputs.steps_per_epoch(args, len(samples) // args.batch_size, launch.world_size, images=len(samples))
    return 0


def run_process(args, device_type):
    """One training process, placed by the torchrun variables: device, process group, training."""
    ctx = modes.context()
    if device_type == "cpu" and ctx.local_world_size > 1 and not os.environ.get("OMP_NUM_THREADS"):
        # several CPU processes on one node: share the cores instead of each spinning on all of them
        torch.set_num_threads(supervisor.threads_per_process(ctx.local_world_size))
    index = modes.device_index(args, ctx)
    device = devices.set_device(device_type, index)
    process_group.init_process_group(ctx, args.dist_backend or devices.default_backend(device_type),
                                   timeout_seconds=args.dist_timeout)
    train(args, ctx, device, writers.Logger(device_type, index, enabled=ctx.rank == 0))  # main() leaves the group


def train(args, ctx, device, log):
    """Build data, model, precision, optimizer, schedule and EMA, resume; then train, check, evaluate and save each
    epoch, and the optional BatchNorm recalibration at the end."""
    is_main = ctx.rank == 0
    seeding.seed_everything(args.seed)  # same initial weights on every rank
    data = inputs.build(args, ctx, device)
    checkpoint = ckpt.load_checkpoint(args.resume, "--resume", note=log) if args.resume else None
    model = build_model(args, data.num_classes, checkpoint).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    seeding.seed_everything(args.seed + ctx.rank)  # different augmentation streams per rank

    amp = precision.build_amp(args.amp, device.type, args.opt_level, args.loss_scale, dtype=args.amp_dtype, log=log)
    optimizer = optim.build_optimizer(
        model, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        norm_weight_decay=args.norm_weight_decay, bias_weight_decay=args.bias_weight_decay,
        apex_optimizers=amp.apex_optimizers, device_type=device.type)
    ema = ModelEma(model, args.model_ema) if args.model_ema is not None else None
    model, optimizer = amp.prepare(model, optimizer)
    start_epoch, best_acc1 = ckpt.resume(checkpoint, args=args, world_size=ctx.world_size, rank=ctx.rank,
                                         optimizer=optimizer, amp=amp, ema=ema, log=log)
    steps = None if args.evaluate else inputs.steps_per_epoch(args, len(data.train), ctx.world_size,
                                                              images=data.train_images)
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    fresh = not (args.resume or args.evaluate)
    if is_main and fresh:  # the first change this run makes on disk (a failed start above leaves everything as it was)
        keep_previous_results(args, metrics_path, log)
    with writers.MetricsWriter(metrics_path, enabled=is_main, append=not fresh, tensorboard=args.tensorboard,
                               log=log) as metrics:
        settings = engine.LoopSettings(criterion=engine.build_criterion(args.label_smoothing).to(device), amp=amp,
                                       preprocess=data.preprocess, device=device, log=log, metrics=metrics,
                                       print_freq=args.print_freq, world_size=ctx.world_size)
        if args.evaluate:
            engine.evaluate(model, ema, data.val, settings, epoch=start_epoch)
            return
        if args.resume:  # readers drop the records of epochs >= this one written before it
            metrics.write({"kind": "resume", "epoch": start_epoch})
        opt = engine.Optimization(optimizer=optimizer, ema=ema,
                                  schedule=optim.LrSchedule(args.lr, args.epochs, steps, args.warm_up_epochs,
                                                            args.lr_schedule),
                                  accumulation_steps=optim.gradient_accumulation_steps(args))
        saver = ckpt.CheckpointSaver(args.output_dir, prefix=args.checkpoint_nameprefix, every=args.checkpoint_freq,
                                     best_acc1=best_acc1, enabled=is_main,
                                     meta={"arch": args.arch, "args": vars(args), "classes": data.classes})
        if is_main:
            files.remove_stale_temps(args.output_dir)  # temp files of a write that a kill interrupted
        trained = model_for_training(model, args, ctx, device)
        if args.dummy:
            log("=> --dummy: synthetic data, {} steps per epoch{}, validation skipped (its accuracy would mean "
                "nothing)".format(steps, "" if args.steps_per_epoch else " (--steps-per-epoch N to change)"))
        weights = [model] + ([ema.module] if ema is not None else [])
        state = {"model": model, "optimizer": optimizer, "amp": amp, "ema": ema}

        for epoch in range(start_epoch, args.epochs):
            inputs.set_epoch(data, epoch)
            engine.train_one_epoch(trained, data.train, settings, opt, epoch=epoch, steps=steps)
            engine.check_weights(weights, epochs_done=epoch + 1, base_lr=args.lr)  # before any file is written
            evaluate = should_evaluate(epoch, args)
            acc1 = engine.evaluate(model, ema, data.val, settings, epoch=epoch) if evaluate else None
            saver.save(epoch + 1, acc1, **state)

        if args.bn_recalibrate:
            inputs.set_epoch(data, args.epochs)
            used = recalibrate_models(weights, data.train, preprocess=data.preprocess, num_batches=args.bn_recalibrate)
            log("=> BatchNorm statistics recomputed over {} batches".format(used))
            acc1 = engine.evaluate(model, ema, data.val, settings, epoch=args.epochs) if not args.dummy else None
            engine.check_weights(weights, epochs_done=args.epochs, base_lr=args.lr)
            saver.save(args.epochs, acc1, **state)


def keep_previous_results(args, metrics_path, log):
    """A fresh run in a folder with an earlier run's metrics.jsonl or checkpoints: move them into
    `previous-<time>/` there (as the launchers do), so nothing of that run is overwritten."""
    paths = [metrics_path] + auto_resume.checkpoint_files(args.output_dir, args.checkpoint_nameprefix)
    moved_to = files.move_aside(args.output_dir, paths)
    if moved_to:
        log("=> the previous run's metrics.jsonl and checkpoints in {} were moved to {}".format(
            os.path.abspath(args.output_dir), moved_to))


def model_for_training(model, args, ctx, device):
    """The model the training steps run: DistributedDataParallel over several processes, then --compile's
    torch.compile. Checkpoints, the EMA and validation use `model` itself."""
    trained = model
    if ctx.world_size > 1:
        ids = [device.index] if device.type in ("cuda", "npu") else None
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if args.compile:
        trained = precision.compile_model(trained, args.compile_backend)
    return trained


def build_model(args, num_classes, checkpoint):
    """The network, with the weights of --resume FILE or the registry's pretrained file when asked."""
    try:
        model = models.build_model(args.arch, num_classes=num_classes, pretrained=args.pretrained and not args.resume)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if checkpoint is not None:
        ckpt.load_into_model(model, ckpt.split_weights(checkpoint)[0], args.resume)
    return model


def should_evaluate(epoch, args):
    """Every --eval-freq epochs, every epoch in the last 10% of the run, and after the last epoch; never on
    --dummy's synthetic data."""
    if args.dummy:
        return False
    return (epoch + 1) % args.eval_freq == 0 or epoch >= int(args.epochs * 0.9) or epoch + 1 == args.epochs


if __name__ == "__main__":
    sys.exit(main())
