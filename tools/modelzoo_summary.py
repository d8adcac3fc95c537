"""Turn a rank-0 training log into the ModelZoo summary file the launchers leave behind.

The launcher (training/launch/modelzoo.py) calls this one module instead of a grep/awk pipeline per script. It reads the
log with training.logs.modelzoo_format.parse_log, writes `<output>/<CaseName>.log` (`key = value` lines,
written to a temp file and renamed so a crash never leaves half a summary) and prints the `Final ...` lines. A log
without the figures
a finished run prints is an error (non-zero exit), never a summary with empty values.
"""
import argparse
import os
import platform
import sys

from training.errors import UserError, run_cli
from training.checkpoints.files import atomic_write, make_folder
from training.logs.modelzoo_format import parse_log
from training.recipes import NETWORK, case_name

MODES = ("perf", "acc")


def summarize(lines, *, network, rank_size, batch_size, mode, e2e_seconds, device_type=None):
    """The summary as an ordered list of (key, value) from the lines of a rank-0 log.

    ActualFPS is the last epoch's `FPS@all` (global images/s over all ranks, the first steps excluded by main.py);
    TrainingTime is seconds per global batch at that speed; ActualLoss is the loss of the last logged training step
    (not a validation loss); TrainAccuracy (accuracy runs) is the last `[AVG-ACC]` Acc@1 of the model itself (an EMA
    line, `[EMA-ACC]`, is not counted).
    """
    if mode not in MODES:
        raise UserError("unknown summary mode {!r}: expected one of {}".format(mode, ", ".join(MODES)))
    records = parse_log(lines)
    fps_records = [r for r in records if r["kind"] == "fps"]
    step_records = [r for r in records if r["kind"] == "step"]
    acc_records = [r for r in records if r["kind"] == "acc" and not r["ema"]]
    if not fps_records:
        raise UserError("no '* FPS@all' line in the log: the run did not finish an epoch")
    if not step_records:
        raise UserError("no training step line ('Epoch: [e][i/n] ... Loss') in the log")
    if mode == "acc" and not acc_records:
        raise UserError("no '[AVG-ACC] * Acc@1' line in the log: the run never finished an evaluation")
    fps = fps_records[-1]["fps"]
    if not fps > 0:
        raise UserError("the last FPS@all in the log is {}, not a positive number".format(fps))
    name = case_name(batch_size, rank_size, mode, network=network)
    summary = [
        ("Network", network),
        ("RankSize", rank_size),
        ("BatchSize", batch_size),
        ("DeviceType", device_type or platform.machine()),
        ("CaseName", name),
        ("ActualFPS", "{:.3f}".format(fps)),
        ("TrainingTime", "{:.4f}".format(batch_size / fps)),
        ("ActualLoss", "{:.4f}".format(step_records[-1]["loss"])),
    ]
    if mode == "acc":
        summary.append(("TrainAccuracy", "{:.3f}".format(acc_records[-1]["acc1"])))
    summary.append(("E2ETrainingTime", "{:d}".format(int(e2e_seconds))))
    return summary


def write_summary(summary, output_dir):
    """Write `<output_dir>/<CaseName>.log` atomically; returns its path."""
    make_folder(output_dir)
    path = os.path.join(output_dir, dict(summary)["CaseName"] + ".log")
    text = "".join("{} = {}\n".format(key, value) for key, value in summary)
    atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))
    return path


def read_summary(path):
    """The `key = value` lines of a summary file as a dict of strings (for tests and other tools)."""
    values = {}
    with open(path) as handle:
        for line in handle:
            if " = " in line:
                key, value = line.rstrip("\n").split(" = ", 1)
                values[key] = value
    return values


def final_lines(summary):
    """The lines the original prints at the end of a run."""
    values = dict(summary)
    lines = ["Final Performance images/sec : {}".format(values["ActualFPS"])]
    if "TrainAccuracy" in values:
        lines.append("Final Train Accuracy : {}".format(values["TrainAccuracy"]))
    lines.append("E2E Training Duration sec : {}".format(values["E2ETrainingTime"]))
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="rank-0 training log (test/output/<device_id>/train_<device_id>.log)")
    parser.add_argument("--network", default=NETWORK, help="Network key")
    parser.add_argument("--rank-size", type=int, required=True, help="number of training processes")
    parser.add_argument("--batch-size", type=int, required=True, help="global batch size")
    parser.add_argument("--mode", choices=MODES, required=True, help="perf: performance run; acc: accuracy run")
    parser.add_argument("--e2e-seconds", type=float, required=True, help="wall time of the whole launch")
    parser.add_argument("--output-dir", required=True, help="folder for <CaseName>.log")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.log):
        raise UserError("training log {} does not exist".format(args.log))
    with open(args.log, errors="replace") as handle:
        lines = handle.readlines()
    try:
        summary = summarize(lines, network=args.network, rank_size=args.rank_size, batch_size=args.batch_size,
                            mode=args.mode, e2e_seconds=args.e2e_seconds)
    except UserError as exc:
        raise UserError("{} ({})".format(exc, args.log)) from None
    path = write_summary(summary, args.output_dir)
    for line in final_lines(summary):
        print(line)
    print("summary: {}".format(path))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
