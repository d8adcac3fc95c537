"""The ModelZoo log format: the one place that writes the three line kinds and reads them back.

Existing ModelZoo parsers split these lines on whitespace and expect the four-field prefix `[npu id: N ]`,
so the prefix keeps four fields whatever the device word is (npu, cuda or cpu).
"""
import re

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

STEP_RE = re.compile(r"\[\w+ id: *\d+ *\] Epoch: \[(\d+)\]\[ *(\d+)/(\d+)\].*?\tLoss " + _NUM + r" \(" + _NUM + r"\)")
FPS_RE = re.compile(r"\[\w+ id: *\d+ *\] \* FPS@all " + _NUM + r", TIME@all " + _NUM)
ACC_RE = re.compile(r"\[\w+ id: *\d+ *\] \[([A-Z-]+)\] \* Acc@1 " + _NUM + r" Acc@5 " + _NUM)
_CLOCK = r"(\d+):(\d\d):(\d\d)"
LR_ETA_RE = re.compile(r"\tLR " + _NUM + r"\tETA " + _CLOCK + r" \(run " + _CLOCK + r"\)")

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


def clock(seconds):
    """`H:MM:SS` (hours past 24 stay hours, so the text is one whitespace field): 3725.4 -> `1:02:05`."""
    total = max(0, int(round(seconds)))
    return "{}:{:02d}:{:02d}".format(total // 3600, total // 60 % 60, total % 60)


def format_step(head, epoch, step, steps, fields, *, lr=None, eta=None):
    """One progress line. `fields` is a sequence of (name, value, average, format spec), e.g. ("Loss", v, a, ".4e").

    With `lr` and `eta` (seconds left in the epoch, seconds left in the run) the line ends with
    `\tLR 4.8828e-04\tETA 0:01:05 (run 12:30:00)`: after every ModelZoo field, so their greps and awks still read
    the same columns."""
    line = _progress("{} Epoch: [{}]".format(head, epoch), step, steps, fields)
    if lr is not None and eta is not None:
        line += "\tLR {:.4e}\tETA {} (run {})".format(lr, clock(eta[0]), clock(eta[1]))
    return line


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
    """Return a dict for a step, FPS or accuracy line, else None. A step line's dict has `lr`, `eta_epoch` and
    `eta_run` (whole seconds) when the line has them."""
    match = STEP_RE.search(line)
    if match:
        record = {"kind": "step", "epoch": int(match.group(1)), "step": int(match.group(2)),
                  "steps": int(match.group(3)), "loss": float(match.group(4)), "loss_avg": float(match.group(5))}
        tail = LR_ETA_RE.search(line, match.end())
        if tail:  # lines of this version; older logs have no LR / ETA
            hms = [int(value) for value in tail.groups()[1:]]
            record.update(lr=float(tail.group(1)), eta_epoch=hms[0] * 3600 + hms[1] * 60 + hms[2],
                          eta_run=hms[3] * 3600 + hms[4] * 60 + hms[5])
        return record
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
