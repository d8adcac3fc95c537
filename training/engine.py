"""The train and validation loops and the loss: meters, FPS, what each step line and metrics.jsonl record holds.

Losses and accuracy counts are summed on the device and read back only when a line is printed, so the loop does
not wait for the accelerator every step. FPS is global (all ranks) images/s between two device synchronisations:
after step 10 and after the last step. An epoch of <= 10 steps excludes only its first step (compilation and
loader start-up), and a 1-step epoch measures that step, so a number is always printed.
"""
import collections
import contextlib
import math
import time

import torch

from training.launch import process_group
from training.errors import UserError
from training.logs import modelzoo_format
from training.logs.writers import Logger, MetricsWriter

FPS_SKIP_STEPS = 10


def synchronize(device):
    """Wait for queued work on the accelerator (timing points only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize()


def fps_skip(steps):
    """Steps left out of the FPS: 10, or 1 when the epoch has <= 10 steps, or 0 for a single step."""
    if steps > FPS_SKIP_STEPS:
        return FPS_SKIP_STEPS
    return 1 if steps > 1 else 0


def correct_counts(output, target, topk=(1, 5)):
    """Number of samples whose target is in the top-k logits, per k (a device tensor, no sync)."""
    maxk = min(max(topk), output.size(1))
    _, pred = output.topk(maxk, 1, True, True)
    hits = pred.eq(target.view(-1, 1))
    return torch.stack([hits[:, :min(k, maxk)].any(dim=1).sum() for k in topk]).to(torch.float64)


class SmoothedCrossEntropy(torch.nn.Module):
    """Cross-entropy with label smoothing for torch < 1.10, whose CrossEntropyLoss lacks `label_smoothing`."""

    def __init__(self, smoothing):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, output, target):
        log_probs = torch.nn.functional.log_softmax(output, dim=1)
        nll = -log_probs.gather(1, target.view(-1, 1)).squeeze(1)
        return ((1.0 - self.smoothing) * nll - self.smoothing * log_probs.mean(dim=1)).mean()


def build_criterion(label_smoothing=0.0):
    """CrossEntropyLoss, with label smoothing on any torch version."""
    if not label_smoothing:
        return torch.nn.CrossEntropyLoss()
    try:
        return torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    except TypeError:
        return SmoothedCrossEntropy(label_smoothing)


Reading = collections.namedtuple("Reading", "value average")  # this step's value and the mean over the steps so far


class StepReadings(collections.namedtuple("StepReadings", "batch_time data_time loss acc1 acc5")):
    """What a progress line shows, each a Reading: seconds per step and waiting for data, loss, top-1/top-5 (%)."""
    __slots__ = ()

    LINE = (("Time", "batch_time", "6.3f"), ("Data", "data_time", "6.3f"), ("Loss", "loss", ".4e"),
            ("Acc@1", "acc1", "6.2f"), ("Acc@5", "acc5", "6.2f"))

    def line_fields(self):
        """(name, value, average, format) per field, as modelzoo_format.format_step and format_test take them."""
        return [(name, getattr(self, key).value, getattr(self, key).average, spec) for name, key, spec in self.LINE]


class LoopSettings:
    """What the train and validation loops share besides model and data: loss, precision, device-side
    preprocessing, the device, logs and how often to print."""

    def __init__(self, *, criterion, amp, preprocess, device, log=None, metrics=None, print_freq=10, world_size=1):
        self.criterion = criterion
        self.amp = amp
        self.preprocess = preprocess
        self.device = device
        self.log = log or Logger("cpu", 0, enabled=False)
        self.metrics = metrics or MetricsWriter(None, enabled=False)
        self.print_freq = max(1, print_freq)
        self.world_size = world_size


class Optimization:
    """The optimizer side of a training epoch: optimizer, LR schedule, gradient accumulation, weight EMA."""

    def __init__(self, *, optimizer, schedule, accumulation_steps=1, ema=None):
        self.optimizer = optimizer
        self.schedule = schedule
        self.accumulation_steps = max(1, accumulation_steps)
        self.ema = ema


class _Meter:
    """Loss and top-1/top-5 sums on the device (read back only when a line is printed), host-side timings."""

    def __init__(self, device):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, correct@1, correct@5, n
        self.time_total = self.data_total = 0.0
        self.count = 0

    def add(self, loss, output, targets):
        """Fold one batch in without a host sync; returns its (correct@1, correct@5) counts (device tensor)."""
        counts = correct_counts(output.float(), targets)
        n = targets.size(0)
        # no host-to-device tensor per step: a blocking copy there would sync the accelerator every step
        self.sums[:3] += torch.stack([loss.detach().double() * n, counts[0], counts[1]])
        self.sums[3] += n
        return counts

    def tick(self, batch_time, data_time):
        self.time_total += batch_time
        self.data_total += data_time
        self.count += 1

    def readings(self, batch_time, data_time, loss, counts, n):
        """This step's StepReadings, beside the means so far (one sync for the whole line)."""
        total = self.sums.tolist()
        acc_now = (counts * (100.0 / n)).tolist()
        return StepReadings(batch_time=Reading(batch_time, self.time_total / self.count),
                            data_time=Reading(data_time, self.data_total / self.count),
                            loss=Reading(float(loss.item()), total[0] / total[3]),
                            acc1=Reading(acc_now[0], 100.0 * total[1] / total[3]),
                            acc5=Reading(acc_now[1], 100.0 * total[2] / total[3]))


def _no_sync(model, active):
    """DDP's no_sync() for accumulation micro-steps that do not end in an optimizer step."""
    if active and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def _train_step(model, images, targets, settings, opt, boundary):
    """Forward, backward, and (at an accumulation boundary) the optimizer step and EMA update; returns
    (output, loss)."""
    with _no_sync(model, not boundary):
        with settings.amp.autocast():
            output = model(images)
            loss = settings.criterion(output, targets)
        settings.amp.backward(loss / opt.accumulation_steps, opt.optimizer)
    if boundary:
        settings.amp.step(opt.optimizer)
        opt.optimizer.zero_grad()
        if opt.ema is not None:
            opt.ema.update(getattr(model, "module", model))
    return output, loss


def time_left(meter, schedule, *, epoch, step, steps):
    """(seconds left in this epoch of `steps` steps, seconds left in the run) after `step`, at this epoch's mean
    step time so far. The run's figure counts training steps only (validation and checkpoints come on top)."""
    mean_step = meter.time_total / max(1, meter.count)
    in_epoch = max(0, steps - step - 1)
    in_run = max(0, schedule.total_steps - epoch * schedule.steps_per_epoch - step - 1)
    return in_epoch * mean_step, in_run * mean_step


def train_one_epoch(model, loader, settings, opt, *, epoch, steps):
    """One epoch of at most `steps` batches. Returns the epoch record (also written to metrics.jsonl)."""
    model.train()
    meter = _Meter(settings.device)
    bad_images = batch_images = 0
    skip = fps_skip(steps)
    epoch_start = time.time()
    fps_start = epoch_start if skip == 0 else None
    lr = opt.schedule.lr(epoch, 0)
    pending_losses = []  # this step's and earlier steps' losses since the last print point (device tensors)
    opt.optimizer.zero_grad()
    end = time.time()
    for step, (images, targets, bad) in enumerate(loader):
        if step >= steps:
            break
        data_time = time.time() - end
        bad_images += int(bad)
        images = settings.preprocess(images.to(settings.device, non_blocking=True), True)
        targets = targets.to(settings.device, non_blocking=True)
        batch_images = images.size(0)
        lr = opt.schedule.apply(opt.optimizer, epoch, step)
        boundary = (step + 1) % opt.accumulation_steps == 0 or step + 1 == steps
        output, loss = _train_step(model, images, targets, settings, opt, boundary)
        with torch.no_grad():
            counts = meter.add(loss, output, targets)
        pending_losses.append(loss.detach())
        if step + 1 == skip:
            synchronize(settings.device)
            fps_start = time.time()
        batch_time = time.time() - end
        meter.tick(batch_time, data_time)
        if step % settings.print_freq == 0 or step + 1 == steps:
            now = meter.readings(batch_time, data_time, loss, counts, targets.size(0))
            losses = torch.stack(pending_losses).double().tolist()  # already computed: the sync above waited
            pending_losses = []
            eta = time_left(meter, opt.schedule, epoch=epoch, step=step, steps=steps)
            settings.log(modelzoo_format.format_step(settings.log.head, epoch, step, steps, now.line_fields(), lr=lr,
                                                     eta=eta))
            settings.metrics.write({"kind": "step", "epoch": epoch, "step": step, "steps": steps,
                                    "loss": now.loss.value, "losses": losses, "lr": lr, "acc1": now.acc1.value,
                                    "acc5": now.acc5.value, "batch_time": batch_time, "data_time": data_time})
            check_loss(now.loss.value, epoch=epoch, step=step, base_lr=opt.schedule.base_lr)
            check_loss(now.loss.average, epoch=epoch, step=step, base_lr=opt.schedule.base_lr)  # the mean so far
        end = time.time()
    synchronize(settings.device)
    record = _end_epoch(settings, meter, epoch=epoch, lr=lr, timing=(epoch_start, fps_start, skip, batch_images),
                        bad_images=bad_images)
    check_loss(record["loss"], epoch=epoch, step=steps - 1, base_lr=opt.schedule.base_lr)  # all ranks' mean
    return record


def _end_epoch(settings, meter, *, epoch, lr, timing, bad_images):
    """The FPS line and the epoch record. FPS: global images/s over the steps after the first `skip`."""
    epoch_start, fps_start, skip, batch_images = timing
    done = time.time()
    measured = max(0, meter.count - skip)
    elapsed = done - fps_start if fps_start is not None else 0.0
    step_time = elapsed / measured if measured else 0.0
    fps = settings.world_size * batch_images * measured / elapsed if elapsed > 0 and measured else 0.0
    settings.log(modelzoo_format.format_fps(settings.log.head, fps, step_time))
    totals = process_group.all_reduce_sum(meter.sums.tolist() + [bad_images], settings.device)
    record = {"kind": "epoch", "epoch": epoch, "fps": fps, "step_time": step_time,
              "loss": totals[0] / totals[3] if totals[3] else float("nan"), "lr": lr,
              "bad_images": int(totals[4]), "seconds": done - epoch_start}
    settings.metrics.write(record)
    return record


def validate(model, loader, settings, *, epoch=None, tag=modelzoo_format.ACC_TAG):
    """Top-1/top-5 and loss over this rank's share of the val set, summed over all ranks (every image counted
    once). Prints `Test:` progress lines and the `[AVG-ACC]` (or `[EMA-ACC]`) line; returns (acc1, acc5, loss)."""
    model.eval()
    meter = _Meter(settings.device)
    steps = len(loader)
    end = time.time()
    with torch.no_grad():
        for step, (images, targets, _bad) in enumerate(loader):
            data_time = time.time() - end
            images = settings.preprocess(images.to(settings.device, non_blocking=True), False)
            targets = targets.to(settings.device, non_blocking=True)
            with settings.amp.autocast():
                output = model(images)
            output = output.float()
            loss = settings.criterion(output, targets)
            counts = meter.add(loss, output, targets)
            meter.tick(time.time() - end, data_time)
            if settings.log.enabled and (step % settings.print_freq == 0 or step + 1 == steps):
                now = meter.readings(time.time() - end, data_time, loss, counts, targets.size(0))
                settings.log(modelzoo_format.format_test(settings.log.head, step, steps, now.line_fields()))
            end = time.time()
    loss_sum, top1, top5, count = process_group.all_reduce_sum(meter.sums.tolist(), settings.device)
    if count == 0:
        acc1 = acc5 = 0.0
        mean_loss = float("nan")
    else:
        acc1, acc5, mean_loss = 100.0 * top1 / count, 100.0 * top5 / count, loss_sum / count
    settings.log(modelzoo_format.format_acc(settings.log.head, acc1, acc5, tag=tag))
    settings.metrics.write({"kind": "eval", "epoch": epoch, "acc1": acc1, "acc5": acc5, "loss": mean_loss,
                            "ema": tag == modelzoo_format.EMA_ACC_TAG, "images": int(count)})
    return acc1, acc5, mean_loss


def evaluate(model, ema, loader, settings, *, epoch):
    """Acc@1 of the model (its EMA is scored beside it), with rank 0's BatchNorm statistics on every rank."""
    process_group.broadcast_buffers(model)
    acc1 = validate(model, loader, settings, epoch=epoch)[0]
    if ema is not None:
        process_group.broadcast_buffers(ema.module)
        validate(ema.module, loader, settings, epoch=epoch, tag=modelzoo_format.EMA_ACC_TAG)
    return acc1


# ----------------------------------------------------------------------------------------------------------
# Non-finite values stop a run before they reach a checkpoint: the loss is checked where it is read anyway
# (a printed step line, the epoch mean), the weights once per epoch before any checkpoint write.

class NonFinite(UserError):
    """The loss or the weights hold inf / NaN: the run stops with this one-line message."""


def check_loss(loss, *, epoch, step, base_lr):
    """Raise NonFinite when `loss` (a float already on the host: a step line's loss or the epoch mean up to
    `step`) is inf or NaN."""
    if not math.isfinite(loss):
        raise NonFinite("the training loss became {} by epoch {}, step {}: training diverged; restart with a lower "
                        "--lr (this run: {:g})".format(loss, epoch, step, base_lr))


def first_non_finite(state_dict):
    """Name of the first floating-point tensor of `state_dict` that holds inf or NaN, else None (one host sync)."""
    named = [(name, value) for name, value in state_dict.items()
             if torch.is_tensor(value) and value.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(value).all() for _, value in named]).cpu().tolist()
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    return bad[0] if bad else None


def check_weights(modules, *, epochs_done, base_lr):
    """Raise NonFinite when a module of `modules` (the model, its EMA) holds inf or NaN after `epochs_done`
    epochs; called before the checkpoint saver writes, so no file receives such weights."""
    for module in modules:
        name = first_non_finite(module.state_dict())
        if name is not None:
            raise NonFinite("the weights hold inf or NaN after {} epoch(s) ({}): not saved, the checkpoints on disk "
                            "are from earlier epochs; restart with a lower --lr (this run: {:g})".format(
                                epochs_done, name, base_lr))
