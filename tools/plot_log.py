"""Training curves in one figure: loss, learning rate, Acc@1/Acc@5 per epoch and FPS per epoch.

    python3 -m tools.plot_log OUTPUT_DIR/metrics.jsonl -o curves.png
    python3 -m tools.plot_log test/output/0/train_0.log -o curves.png

Reads either main.py's metrics.jsonl (records of kind step / epoch / eval, see docs/architecture.md) or a ModelZoo
text log (ours or the original's), whose lines are parsed by training.logs.modelzoo_format.parse_log. A text log has no
learning rate (the ModelZoo step line carries none) and no epoch number on its FPS and accuracy lines: those
belong to the epoch of the step lines before them. A line that cannot be read (a half-written last JSON line after a
crash) is skipped with a count on stderr. The image is written to a temporary file and renamed. A `resume` record
(written by a resumed run) drops the records of its epoch and later ones that came before it, so epochs trained
twice are drawn once, from the run that continued.

A metrics.jsonl step record with `losses` (the loss of every step since the previous step record) gives one point
per training step; without it, one point per logged step. The loss axis is logarithmic (linear when a loss is not
positive), and its top is set by the bulk of the values: a spike far above them is drawn as a marker on the top
edge and named in the panel's title, so it does not flatten every other curve. EMA curves are dashed and have
colours of their own.
"""
import argparse
import json
import math
import os
import sys

from training.errors import UserError, run_cli
from training.checkpoints.files import atomic_write
from training.logs.records import global_step, step_losses, steps_per_epoch
from training.logs.modelzoo_format import parse_line


class Curves:
    """What the figure shows, whichever log it came from."""

    def __init__(self):
        self.steps = []  # (fractional epoch, loss, lr or None): one per step whose loss the log has
        self.epochs = {}  # epoch -> {"loss": mean train loss, "lr": ..., "fps": ...}
        self.evals = []  # (epoch, acc1, acc5, loss or None, ema)
        self.skipped = 0
        self.every_step = False  # True when step records carry the loss of every step (`losses`)

    def empty(self):
        return not (self.steps or self.epochs or self.evals)


def _number(value):
    """float, or None for a missing / non-finite value (JSON NaN loss of an empty epoch)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _add_json(curves, record):
    kind = record.get("kind")
    epoch = record.get("epoch")
    if kind == "step":
        steps = float(steps_per_epoch(record))
        own = global_step(record)
        curves.every_step = curves.every_step or bool(record.get("losses"))
        for index, loss in step_losses(record):
            lr = _number(record.get("lr")) if index == own else None  # the record's lr is its own step's
            curves.steps.append((index / steps, _number(loss), lr))
    elif kind == "epoch":
        curves.epochs[int(epoch)] = {key: _number(record.get(key)) for key in ("loss", "lr", "fps")}
    elif kind == "eval" and epoch is not None:
        curves.evals.append((int(epoch), _number(record.get("acc1")), _number(record.get("acc5")),
                             _number(record.get("loss")), bool(record.get("ema"))))
    elif kind == "resume" and epoch is not None:
        _forget_from(curves, int(epoch))


def _forget_from(curves, epoch):
    """A resumed run trains `epoch` and the ones after it again: drop what the earlier run logged for them."""
    curves.steps = [point for point in curves.steps if point[0] < epoch]
    curves.epochs = {e: figures for e, figures in curves.epochs.items() if e < epoch}
    curves.evals = [entry for entry in curves.evals if entry[0] < epoch]


def _epoch(curves, epoch):
    """The figures of `epoch`, created empty on first use."""
    return curves.epochs.setdefault(epoch, {"loss": None, "lr": None, "fps": None})


def _add_text(curves, record, last_epoch):
    """One parse_line record of a ModelZoo log; returns the epoch the following lines belong to."""
    if record["kind"] == "step":
        epoch = record["epoch"]
        x = epoch + record["step"] / float(max(1, record["steps"]))
        curves.steps.append((x, _number(record["loss"]), None))
        # the running average of the epoch's last step line is the epoch's mean loss
        _epoch(curves, epoch)["loss"] = _number(record["loss_avg"])
        return epoch
    if last_epoch is None:
        return None  # FPS / accuracy before any step line: no epoch to put it at
    if record["kind"] == "fps":
        _epoch(curves, last_epoch)["fps"] = _number(record["fps"])
    elif record["kind"] == "acc":
        curves.evals.append((last_epoch, record["acc1"], record["acc5"], None, record["ema"]))
    return last_epoch


def read_log(path):
    """Curves from a metrics.jsonl or a ModelZoo text log (each line is tried as JSON when it starts with `{`)."""
    if not os.path.isfile(path):
        raise UserError("log file not found: {}".format(path))
    curves = Curves()
    last_epoch = None
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                text = line.strip()
                if text.startswith("{"):
                    try:
                        record = json.loads(text)
                        if isinstance(record, dict):
                            _add_json(curves, record)
                    except (ValueError, TypeError):
                        curves.skipped += 1
                    continue
                record = parse_line(line)
                if record is not None:
                    last_epoch = _add_text(curves, record, last_epoch)
    except OSError as exc:
        raise UserError("cannot read {}: {}".format(path, exc.strerror or exc)) from None
    if curves.empty():
        raise UserError("{} has no training records (expected metrics.jsonl lines or ModelZoo log lines)".format(path))
    return curves


def _series(pairs):
    """Two lists (x, y) without the points whose y is None."""
    kept = [(x, y) for x, y in pairs if y is not None]
    return [p[0] for p in kept], [p[1] for p in kept]


def _note(axis, text):
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, color="gray")


# Plain-model curves are solid, EMA curves dashed and in colours of their own.
COLOURS = {"train": "tab:blue", "lr": "tab:gray", "fps": "tab:brown",
           "val loss": "tab:red", "Acc@1": "tab:purple", "Acc@5": "tab:orange",
           "val loss EMA": "tab:cyan", "Acc@1 EMA": "tab:green", "Acc@5 EMA": "tab:olive"}
SPIKE_DECADES = 1.0  # a loss more than 10x above the upper quartile of all losses is drawn as a spike marker


def loss_axis_range(values):
    """(scale, bottom, top) for the loss axis: "log" when every loss is positive, else "linear"; the top leaves out
    the values more than SPIKE_DECADES decades above the upper quartile (in log space), so one spike does not
    squash the rest."""
    import numpy

    values = numpy.asarray(values, dtype=float)
    positive = values[values > 0]
    scale = "log" if len(positive) == len(values) else "linear"
    if len(positive):
        ceiling = numpy.percentile(positive, 75) * 10.0 ** SPIKE_DECADES
        kept = values[values <= ceiling]
    else:
        kept = values
    bottom, top = float(kept.min()), float(kept.max())
    if scale == "log":
        return scale, bottom / 1.25, top * 1.25
    margin = 0.05 * (top - bottom) or 1.0
    return scale, bottom - margin, top + margin


def _draw_loss(axis, curves, epochs):
    x, y = _series((s[0], s[1]) for s in curves.steps)
    if x:
        label = "train loss (every step)" if curves.every_step else "train loss (logged steps)"
        axis.plot(x, y, color=COLOURS["train"], alpha=0.35, linewidth=0.8, label=label)
    x, y = _series((e + 1, curves.epochs[e]["loss"]) for e in epochs)
    if x:
        axis.plot(x, y, "o-", color=COLOURS["train"], markersize=3, label="train loss (epoch mean)")
    for ema in (False, True):
        name = "val loss" + (" EMA" if ema else "")
        x, y = _series((e + 1, loss) for e, _, _, loss, is_ema in curves.evals if is_ema == ema)
        if x:
            axis.plot(x, y, "s--" if ema else "s-", color=COLOURS[name], markersize=3, label=name)
    if axis.lines:
        axis.set_title("loss" + _fit_loss_axis(axis))
        axis.legend(fontsize=8)
    else:
        axis.set_title("loss")


def _fit_loss_axis(axis):
    """Scale and limits of the loss axis from the lines on it; points above the top get a marker on the top edge.
    Returns what the title should add: the scale, and how many points are above the axis."""
    points = [(px, py) for line in axis.lines for px, py in zip(line.get_xdata(), line.get_ydata())]
    scale, bottom, top = loss_axis_range([py for _, py in points])
    axis.set_yscale(scale)
    axis.set_ylim(bottom, top)
    note = ""
    if scale == "log":
        _label_log_axis(axis.yaxis, bottom, top)
        note = " (log scale)"
    above = [(px, py) for px, py in points if py > top]
    if above:
        axis.plot([px for px, _ in above], [top] * len(above), "^", color="black", markersize=6, clip_on=False,
                  label="above the axis")
        highest = max(above, key=lambda point: point[1])
        note += ", {} value(s) above the axis, highest {:.3g} at epoch {:.2f}".format(
            len(above), highest[1], highest[0])
    return note


def _label_log_axis(yaxis, bottom, top):
    """Plain-number labels (2, 5, 10, 20) instead of 2x10^0, and enough of them on an axis of one or two decades,
    where decade ticks alone would leave one label or none."""
    from matplotlib.ticker import LogFormatter, LogLocator, NullFormatter

    decades = math.log10(top / bottom)
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    yaxis.set_major_locator(LogLocator(subs=subs))
    yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(math.inf, math.inf)))
    yaxis.set_minor_formatter(NullFormatter())


def _draw_lr(axis, curves, epochs):
    x, y = _series((s[0], s[2]) for s in curves.steps)
    if not x:
        x, y = _series((e + 1, curves.epochs[e]["lr"]) for e in epochs)
    if x:
        axis.plot(x, y, color=COLOURS["lr"])
    else:
        _note(axis, "no learning rate in this log\n(ModelZoo text logs carry none: use metrics.jsonl)")
    axis.set_title("learning rate")


def _draw_accuracy(axis, curves):
    for ema in (False, True):
        suffix = " EMA" if ema else ""
        x1, y1 = _series((e + 1, a1) for e, a1, _, _, is_ema in curves.evals if is_ema == ema)
        x5, y5 = _series((e + 1, a5) for e, _, a5, _, is_ema in curves.evals if is_ema == ema)
        style = "o--" if ema else "o-"
        if x1:
            axis.plot(x1, y1, style, color=COLOURS["Acc@1" + suffix], markersize=3, label="Acc@1" + suffix)
        if x5:
            axis.plot(x5, y5, style, color=COLOURS["Acc@5" + suffix], markersize=3, label="Acc@5" + suffix)
    if axis.lines:
        axis.legend(fontsize=8)
        own = [(a1, e) for e, a1, _, _, is_ema in curves.evals if a1 is not None and not is_ema]
        best = max(own or [(a1, e) for e, a1, _, _, _ in curves.evals if a1 is not None])
        axis.set_title("validation accuracy (%), best Acc@1 {:.3f} after {} epochs".format(best[0], best[1] + 1))
    else:
        _note(axis, "no evaluation in this log")
        axis.set_title("validation accuracy (%)")


def _draw_fps(axis, curves, epochs):
    x, y = _series((e + 1, curves.epochs[e]["fps"]) for e in epochs)
    if x:
        axis.plot(x, y, "o-", color=COLOURS["fps"], markersize=3)
        axis.set_title("training images/s (FPS@all), last {:.1f}".format(y[-1]))
    else:
        _note(axis, "no FPS in this log")
        axis.set_title("training images/s (FPS@all)")


def draw(curves, title):
    """The matplotlib Figure: 2x2 panels (loss, learning rate, accuracy, FPS) sharing the epoch axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(2, 2, figsize=(12, 8), sharex=True)
    loss_axis, lr_axis, acc_axis, fps_axis = axes.flat
    epochs = sorted(curves.epochs)
    _draw_loss(loss_axis, curves, epochs)
    _draw_lr(lr_axis, curves, epochs)
    _draw_accuracy(acc_axis, curves)
    _draw_fps(fps_axis, curves, epochs)
    for axis in (acc_axis, fps_axis):
        axis.set_xlabel("epochs completed")
    for axis in axes.flat:
        axis.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def save(figure, path):
    """savefig to a temp file beside `path`, then rename: an existing image is never left half-written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError("output folder does not exist: {}".format(folder))
    extension = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    if extension not in figure.canvas.get_supported_filetypes():
        raise UserError("cannot write .{} images; use .png, .pdf or .svg".format(extension))
    atomic_write(path, lambda stream: figure.savefig(stream, format=extension, dpi=100))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Plot loss, learning rate, Acc@1/Acc@5 and FPS per epoch from metrics.jsonl or a ModelZoo log.")
    parser.add_argument("log", help="metrics.jsonl written by main.py, or a ModelZoo train_N.log")
    parser.add_argument("-o", "--output", help="image to write (.png, .pdf, .svg; default: LOG with .png)")
    parser.add_argument("--title", help="figure title (default: the log's path)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    output = args.output or os.path.splitext(args.log)[0] + ".png"
    curves = read_log(args.log)
    if curves.skipped:
        print("warning: skipped {} unreadable JSON line(s) in {}".format(curves.skipped, args.log), file=sys.stderr)
    figure = draw(curves, args.title or args.log)
    save(figure, output)
    print("wrote {} ({} steps, {} epochs, {} evaluations)".format(
        output, len(curves.steps), len(curves.epochs), len(curves.evals)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
