"""The ModelZoo log format: the one place that writes the three line kinds and reads them back.

Existing ModelZoo parsers split these lines on whitespace and expect the four-field prefix `[npu id: N ]`,
so the prefix keeps four fields whatever the device word is (npu, cuda or cpu).
"""
import re

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

STEP_RE = re.compile(r"\[\w+ id: *\d+ *\] Epoch: \[(\d+)\]\[ *(\d+)/(\d+)\].*?\tLoss " + _NUM + r" \(" + _NUM + r"\)")
FPS_RE = re.compile(r"\[\w+ id: *\d+ *\] \* FPS@all " + _NUM + r", TIME@all " + _NUM)
ACC_RE = re.compile(r"\[\w+ id: *\d+ *\] \[([A-Z-]+)\] \* Acc@1 " + _NUM + r" Acc@5 " + _NUM)

ACC_TAG = "AVG-ACC"  # the model's own accuracy; what ModelZoo parsers grep for
EMA_ACC_TAG = "EMA-ACC"  # the weight average's accuracy; deliberately does not contain "AVG-ACC"


def prefix(device_type, device_id):
    """`[npu id: 0 ]`: four whitespace-separated fields."""
    return "[{} id: {} ]".format(device_type, device_id)


def _progress(start, steps_done, steps, fields):
    """`start [ i/N]\tName value (average)\t...`: `fields` is a sequence of (name, value, average, format spec)."""
    width = len(str(steps))
    parts = ["{} {:{s}} ({:{s}})".format(name, value, average, s=spec) for name, value, average, spec in fields]
    return "\t".join(["{}[{:{w}d}/{}]".format(start, steps_done, steps, w=width)] + parts)


def format_step(head, epoch, step, steps, fields):
    """One progress line. `fields` is a sequence of (name, value, average, format spec), e.g. ("Loss", v, a, ".4e")."""
    return _progress("{} Epoch: [{}]".format(head, epoch), step, steps, fields)


def format_test(head, step, steps, fields):
    """`[cpu id: 0 ] Test: [ 3/10]\tTime ...`: a validation progress line with the fields of a step line but no
    `Epoch:`, so parsers that take the last training loss never pick a validation loss (a fault of the original)."""
    return _progress("{} Test: ".format(head), step, steps, fields)


def format_fps(head, fps, step_time):
    """`[npu id: 0 ] * FPS@all 5038.508, TIME@all 0.305`: global images/s and mean step seconds."""
    return "{} * FPS@all {:.3f}, TIME@all {:.3f}".format(head, fps, step_time)


def format_acc(head, acc1, acc5, tag=ACC_TAG):
    """`[npu id: 0 ] [AVG-ACC] * Acc@1 65.158 Acc@5 86.000`."""
    return "{} [{}] * Acc@1 {:.3f} Acc@5 {:.3f}".format(head, tag, acc1, acc5)


def parse_line(line):
    """Return a dict for a step, FPS or accuracy line, else None."""
    match = STEP_RE.search(line)
    if match:
        return {"kind": "step", "epoch": int(match.group(1)), "step": int(match.group(2)),
                "steps": int(match.group(3)), "loss": float(match.group(4)), "loss_avg": float(match.group(5))}
    match = FPS_RE.search(line)
    if match:
        return {"kind": "fps", "fps": float(match.group(1)), "step_time": float(match.group(2))}
    match = ACC_RE.search(line)
    if match and match.group(1) in (ACC_TAG, EMA_ACC_TAG):
        return {"kind": "acc", "ema": match.group(1) == EMA_ACC_TAG,
                "acc1": float(match.group(2)), "acc5": float(match.group(3))}
    return None


def parse_log(lines):
    """All records of a text log, in order."""
    records = []
    for line in lines:
        record = parse_line(line)
        if record is not None:
            records.append(record)
    return records
