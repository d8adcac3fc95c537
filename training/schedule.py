"""Per-iteration learning rate: linear warm-up, then cosine (the ModelZoo original) or linear (the paper) to 0.

The original changes the LR once per epoch; here it changes every iteration, which removes the jump at each epoch
boundary and makes the schedule independent of how many epochs a run is split into (resume gives the same LRs).
"""
import math

SCHEDULES = ("cosine", "linear")


def lr_at(step, base_lr, total_steps, warmup_steps=0, schedule="cosine"):
    """LR for iteration `step` (0-based) of `total_steps`.

    Warm-up: base_lr * (step + 1) / warmup_steps for the first `warmup_steps` iterations (never 0).
    Then progress p runs from 0 to 1 over the remaining iterations: cosine base_lr * (1 + cos(pi p)) / 2,
    linear base_lr * (1 - p).
    """
    if schedule not in SCHEDULES:
        raise ValueError("unknown LR schedule {!r}; choose one of {}".format(schedule, ", ".join(SCHEDULES)))
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (1.0 - progress)


class LrSchedule:
    """Sets the optimizer's LR for a global iteration; each group keeps its own ratio to the base LR."""

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs=0, schedule="cosine"):
        self.base_lr = base_lr
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.schedule = schedule
        lr_at(0, base_lr, self.total_steps, self.warmup_steps, schedule)  # validate the name now

    def lr(self, epoch, step):
        return lr_at(epoch * self.steps_per_epoch + step, self.base_lr, self.total_steps, self.warmup_steps,
                     self.schedule)

    def apply(self, optimizer, epoch, step):
        value = self.lr(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = value * group.get("lr_scale", 1.0)
        return value
