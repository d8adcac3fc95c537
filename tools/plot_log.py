"""Training curves in one figure: loss, learning rate, Acc@1/Acc@5 per epoch and FPS per epoch.

    python tools/plot_log.py OUTPUT_DIR/metrics.jsonl -o curves.png
    python tools/plot_log.py test/output/0/train_0.log -o curves.png

Reads either main.py's metrics.jsonl (records of kind step / epoch / eval, see docs/architecture.md) or a ModelZoo
text log (ours or the original's), whose lines are parsed by training.modelzoo_log.parse_log. A text log has no
learning rate (the ModelZoo step line carries none) and no epoch number on its FPS and accuracy lines: those
belong to the epoch of the step lines before them. A line that cannot be read (a half-written last JSON line after a
crash) is skipped with a count on stderr. The image is written to a temporary file and renamed.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.errors import UserError, run_cli  # noqa: E402
from training.files import atomic_write  # noqa: E402
from training.modelzoo_log import parse_line  # noqa: E402


class Curves:
    """What the figure shows, whichever log it came from."""

    def __init__(self):
        self.steps = []  # (fractional epoch, loss, lr or None)
        self.epochs = {}  # epoch -> {"loss": mean train loss, "lr": ..., "fps": ...}
        self.evals = []  # (epoch, acc1, acc5, loss or None, ema)
        self.skipped = 0

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
        steps = max(1, int(record.get("steps") or 1))
        x = int(epoch) + int(record.get("step", 0)) / float(steps)
        curves.steps.append((x, _number(record.get("loss")), _number(record.get("lr"))))
    elif kind == "epoch":
        curves.epochs[int(epoch)] = {key: _number(record.get(key)) for key in ("loss", "lr", "fps")}
    elif kind == "eval" and epoch is not None:
        curves.evals.append((int(epoch), _number(record.get("acc1")), _number(record.get("acc5")),
                             _number(record.get("loss")), bool(record.get("ema"))))


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


def draw(curves, title):
    """The matplotlib Figure: 2x2 panels sharing the epoch axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(2, 2, figsize=(12, 8), sharex=True)
    loss_axis, lr_axis, acc_axis, fps_axis = axes.flat
    epochs = sorted(curves.epochs)

    x, y = _series((s[0], s[1]) for s in curves.steps)
    if x:
        loss_axis.plot(x, y, color="tab:blue", alpha=0.35, linewidth=0.8, label="train loss (logged steps)")
    x, y = _series((e + 1, curves.epochs[e]["loss"]) for e in epochs)
    if x:
        loss_axis.plot(x, y, "o-", color="tab:blue", markersize=3, label="train loss (epoch mean)")
    for ema, style in ((False, "s-"), (True, "s--")):
        x, y = _series((e + 1, loss) for e, _, _, loss, is_ema in curves.evals if is_ema == ema)
        if x:
            loss_axis.plot(x, y, style, color="tab:red", markersize=3, label="val loss" + (" (EMA)" if ema else ""))
    loss_axis.set_title("loss")
    if loss_axis.lines:
        loss_axis.legend(fontsize=8)

    x, y = _series((s[0], s[2]) for s in curves.steps)
    if not x:
        x, y = _series((e + 1, curves.epochs[e]["lr"]) for e in epochs)
    if x:
        lr_axis.plot(x, y, color="tab:green")
    else:
        _note(lr_axis, "no learning rate in this log\n(ModelZoo text logs carry none: use metrics.jsonl)")
    lr_axis.set_title("learning rate")

    for ema, style in ((False, "-"), (True, "--")):
        suffix = " EMA" if ema else ""
        x1, y1 = _series((e + 1, a1) for e, a1, _, _, is_ema in curves.evals if is_ema == ema)
        x5, y5 = _series((e + 1, a5) for e, _, a5, _, is_ema in curves.evals if is_ema == ema)
        if x1:
            acc_axis.plot(x1, y1, "o" + style, color="tab:purple", markersize=3, label="Acc@1" + suffix)
            acc_axis.plot(x5, y5, "o" + style, color="tab:orange", markersize=3, label="Acc@5" + suffix)
    if acc_axis.lines:
        acc_axis.legend(fontsize=8)
        own = [(a1, e) for e, a1, _, _, is_ema in curves.evals if a1 is not None and not is_ema]
        best = max(own or [(a1, e) for e, a1, _, _, _ in curves.evals if a1 is not None])
        acc_axis.set_title("validation accuracy (%), best Acc@1 {:.3f} after {} epochs".format(best[0], best[1] + 1))
    else:
        _note(acc_axis, "no evaluation in this log")
        acc_axis.set_title("validation accuracy (%)")

    x, y = _series((e + 1, curves.epochs[e]["fps"]) for e in epochs)
    if x:
        fps_axis.plot(x, y, "o-", color="tab:brown", markersize=3)
        fps_axis.set_title("training images/s (FPS@all), last {:.1f}".format(y[-1]))
    else:
        _note(fps_axis, "no FPS in this log")
        fps_axis.set_title("training images/s (FPS@all)")

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
