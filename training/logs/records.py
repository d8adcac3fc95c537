"""What a metrics.jsonl record means beyond its own numbers: where a step record sits, and its per-step losses.

One place for it, used by training/logs/tensorboard_sink.py and tools/plot_log.py. The record kinds are listed in
docs/architecture.md ("Logs"). A step record counts its `step` (0-based) within `steps` steps of its `epoch`; its
optional `losses` is the train loss of every step since the previous step record, oldest first, the last one being
the loss of the record's own step.
"""


def steps_per_epoch(record):
    """The record's `steps`, at least 1 (an old or hand-written record may lack it)."""
    return max(1, int(record.get("steps") or 1))


def global_step(record):
    """Steps since the start of training of a step record: epoch * steps + step."""
    return int(record.get("epoch") or 0) * steps_per_epoch(record) + int(record.get("step") or 0)


def step_losses(record):
    """[(global step, loss)] of a step record: one pair per entry of `losses`, counted back from the record's own
    step, or the single pair of its `loss` when it has no `losses` (that loss may be None)."""
    last = global_step(record)
    losses = record.get("losses")
    if isinstance(losses, list) and losses:
        first = last - len(losses) + 1
        return [(first + offset, loss) for offset, loss in enumerate(losses)]
    return [(last, record.get("loss"))]
