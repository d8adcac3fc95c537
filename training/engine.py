"""Train and validation loops: meters, FPS, ModelZoo log lines and metrics.jsonl records.

Losses and accuracy counts are summed on the device and read back only when a line is printed, so the loop does
not wait for the accelerator every step. FPS is global (all ranks) images/s between two device synchronisations:
after step 10 and after the last step. An epoch of <= 10 steps excludes only its first step (compilation and
loader start-up), and a 1-step epoch measures that step, so a number is always printed.
"""
import json
import os
import time

import torch

from training import distributed
from training import modelzoo_log as zlog

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


class MetricsWriter:
    """metrics.jsonl: one JSON object per line, flushed at once (rank 0 only; other ranks get enabled=False)."""

    def __init__(self, path, enabled=True, append=True):
        self.path = path
        self.enabled = enabled and path is not None
        if self.enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not append:
                open(path, "w").close()

    def write(self, record):
        if self.enabled:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record, sort_keys=True) + "\n")


class Logger:
    """Rank 0 prints ModelZoo lines with the `[dev id: N ]` head; other ranks stay quiet."""

    def __init__(self, device_type, device_id, enabled=True):
        self.head = zlog.prefix(device_type, device_id)
        self.enabled = enabled

    def __call__(self, line):
        if self.enabled:
            print(line, flush=True)


def _fields(batch_time, data_time, loss, acc1, acc5):
    """(name, value, average, format) for format_step and format_test; each argument is a (value, average) pair."""
    return [("Time", batch_time[0], batch_time[1], "6.3f"), ("Data", data_time[0], data_time[1], "6.3f"),
            ("Loss", loss[0], loss[1], ".4e"), ("Acc@1", acc1[0], acc1[1], "6.2f"),
            ("Acc@5", acc5[0], acc5[1], "6.2f")]


class TrainState:
    """What one training epoch needs besides the model: the optimizer side and the bookkeeping."""

    def __init__(self, optimizer, criterion, amp, preprocess, schedule, device, world_size, print_freq=10,
                 accum_steps=1, ema=None, log=None, metrics=None):
        self.optimizer = optimizer
        self.criterion = criterion
        self.amp = amp
        self.preprocess = preprocess
        self.schedule = schedule
        self.device = device
        self.world_size = world_size
        self.print_freq = max(1, print_freq)
        self.accum_steps = max(1, accum_steps)
        self.ema = ema
        self.log = log or Logger("cpu", 0, enabled=False)
        self.metrics = metrics or MetricsWriter(None, enabled=False)


def _no_sync(model, active):
    """DDP's no_sync() for accumulation micro-steps that do not end in an optimizer step."""
    if active and hasattr(model, "no_sync"):
        return model.no_sync()
    return _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train_one_epoch(model, loader, state, epoch, steps):
    """One epoch of at most `steps` batches. Returns the epoch record (also written to metrics.jsonl)."""
    model.train()
    device = state.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, correct@1, correct@5, n
    bad_images = 0
    skip = fps_skip(steps)
    batch_images = 0
    epoch_start = time.time()
    fps_start = epoch_start if skip == 0 else None
    mean_time, mean_data = [0.0, 0], [0.0, 0]
    lr = state.schedule.lr(epoch, 0)
    state.optimizer.zero_grad()
    end = time.time()
    for step, (images, targets, bad) in enumerate(loader):
        if step >= steps:
            break
        data_time = time.time() - end
        bad_images += int(bad)
        images = state.preprocess(images.to(device, non_blocking=True), True)
        targets = targets.to(device, non_blocking=True)
        batch_images = images.size(0)
        lr = state.schedule.apply(state.optimizer, epoch, step)
        boundary = (step + 1) % state.accum_steps == 0 or step + 1 == steps
        with _no_sync(model, not boundary):
            with state.amp.autocast():
                output = model(images)
                loss = state.criterion(output, targets)
            state.amp.backward(loss / state.accum_steps, state.optimizer)
        if boundary:
            state.amp.step(state.optimizer)
            state.optimizer.zero_grad()
            if state.ema is not None:
                state.ema.update(getattr(model, "module", model))
        with torch.no_grad():
            counts = correct_counts(output.float(), targets)
            n = targets.size(0)
            # no host-to-device tensor per step: a blocking copy there would sync the accelerator every step
            sums[:3] += torch.stack([loss.detach().double() * n, counts[0], counts[1]])
            sums[3] += n
        if step + 1 == skip:
            synchronize(device)
            fps_start = time.time()
        batch_time = time.time() - end
        mean_time = [mean_time[0] + batch_time, mean_time[1] + 1]
        mean_data = [mean_data[0] + data_time, mean_data[1] + 1]
        if step % state.print_freq == 0 or step + 1 == steps:
            total = sums.tolist()  # one sync for the whole line
            loss_now = float(loss.item())
            acc_now = (counts * (100.0 / n)).tolist()
            averages = (total[0] / total[3], 100.0 * total[1] / total[3], 100.0 * total[2] / total[3])
            fields = _fields((batch_time, mean_time[0] / mean_time[1]), (data_time, mean_data[0] / mean_data[1]),
                             (loss_now, averages[0]), (acc_now[0], averages[1]), (acc_now[1], averages[2]))
            state.log(zlog.format_step(state.log.head, epoch, step, steps, fields))
            state.metrics.write({"kind": "step", "epoch": epoch, "step": step, "steps": steps, "loss": loss_now,
                                 "lr": lr, "acc1": acc_now[0], "acc5": acc_now[1], "batch_time": batch_time,
                                 "data_time": data_time})
        end = time.time()
    synchronize(device)
    done = time.time()
    measured = max(0, mean_time[1] - skip)
    elapsed = done - fps_start if fps_start is not None else 0.0
    step_time = elapsed / measured if measured else 0.0
    fps = state.world_size * batch_images * measured / elapsed if elapsed > 0 and measured else 0.0
    state.log(zlog.format_fps(state.log.head, fps, step_time))
    totals = distributed.all_reduce_sum(sums.tolist() + [bad_images], device)
    record = {"kind": "epoch", "epoch": epoch, "fps": fps, "step_time": step_time,
              "loss": totals[0] / totals[3] if totals[3] else float("nan"), "lr": lr,
              "bad_images": int(totals[4]), "seconds": done - epoch_start}
    state.metrics.write(record)
    return record


def validate(model, loader, criterion, amp, preprocess, device, log, metrics=None, epoch=None, print_freq=10,
             tag=zlog.ACC_TAG):
    """Top-1/top-5 and loss over this rank's share of the val set, summed over all ranks (every image counted
    once). Prints `Test:` progress lines and the `[AVG-ACC]` (or `[EMA-ACC]`) line; returns (acc1, acc5, loss)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    steps = len(loader)
    start = end = time.time()
    data_total = 0.0
    with torch.no_grad():
        for step, (images, targets, _bad) in enumerate(loader):
            data_time = time.time() - end
            data_total += data_time
            images = preprocess(images.to(device, non_blocking=True), False)
            targets = targets.to(device, non_blocking=True)
            with amp.autocast():
                output = model(images)
            output = output.float()
            loss = criterion(output, targets)
            counts = correct_counts(output, targets)
            n = targets.size(0)
            sums[:3] += torch.stack([loss.double() * n, counts[0], counts[1]])
            sums[3] += n
            if log.enabled and (step % print_freq == 0 or step + 1 == steps):
                total = sums.tolist()
                now = time.time()
                fields = _fields((now - end, (now - start) / (step + 1)), (data_time, data_total / (step + 1)),
                                 (float(loss.item()), total[0] / total[3]),
                                 (100.0 * float(counts[0]) / n, 100.0 * total[1] / total[3]),
                                 (100.0 * float(counts[1]) / n, 100.0 * total[2] / total[3]))
                log(zlog.format_test(log.head, step, steps, fields))
            end = time.time()
    loss_sum, top1, top5, count = distributed.all_reduce_sum(sums.tolist(), device)
    if count == 0:
        acc1 = acc5 = 0.0
        mean_loss = float("nan")
    else:
        acc1, acc5, mean_loss = 100.0 * top1 / count, 100.0 * top5 / count, loss_sum / count
    log(zlog.format_acc(log.head, acc1, acc5, tag=tag))
    if metrics is not None:
        metrics.write({"kind": "eval", "epoch": epoch, "acc1": acc1, "acc5": acc5, "loss": mean_loss,
                       "ema": tag == zlog.EMA_ACC_TAG, "images": int(count)})
    return acc1, acc5, mean_loss
