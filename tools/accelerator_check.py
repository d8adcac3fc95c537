"""One prepared check of an NVIDIA GPU box, in one command and one report: the CUDA tests, the ModelZoo performance
script, training images/s against a plain torchvision loop (eager and compiled, NCHW and channels_last), the
channel shuffle choice, and end-to-end images/s on generated JPEGs with the CPU loader and with DALI.

    python -m tools.accelerator_check --out DIR                      # on a CUDA machine, about 8 minutes
    python -m tools.accelerator_check --dry-run                      # anywhere: the steps, their commands, limits
    python -m tools.accelerator_check --device cpu --smoke --out DIR # every step tiny on the CPU (the script works)
    python -m tools.accelerator_check --out DIR --only throughput    # some steps again

Each step runs in its own process with a time limit (a hang or a CUDA error costs that step only, and whatever it
measured before is kept); steps that would start with too little of --budget-s left are skipped. The report is
printed at the end and written to DIR/accelerator_check.json after every step; each step's output is in
DIR/logs/<step>.log. The exit status is 0 when every step ran to the end, 1 otherwise.

Goals it reports against: ours >= 1.5x the torchvision loop's images/s, and end-to-end images/s on real JPEGs with
DALI >= 90 % of the synthetic figure.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import numpy as np
import torch
from PIL import Image

from training.checkpoints.files import atomic_write
from training.data import decode
from training.errors import UserError, run_cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPORT_NAME = "accelerator_check.json"
RESULT_PREFIX = "RESULT "  # a step process prints its figures so far as one such JSON line, as often as it likes
DEFAULT_OUT = os.path.join(REPO_ROOT, "test", "output", "accelerator_check")
GOAL_OURS_OVER_TORCHVISION = 1.5
GOAL_REAL_OVER_SYNTHETIC = 0.9
SHUFFLE_IMPLS = ("auto", "transpose", "index_select")


class Sizes:
    """How big each step is: the real check on a GPU, or `smoke`, each step tiny (seconds on a CPU)."""

    def __init__(self, device, smoke):
        self.device, self.smoke = device, smoke
        self.arch = "shufflenet_v2_x0_5" if smoke else "shufflenet_v2_x1_0"
        self.batch, self.image, self.rounds, self.steps = (4, 64, 1, 1) if smoke else (256, 224, 5, 10)
        self.amp = device != "cpu"  # bfloat16 autocast on a CPU measures nothing the GPU check needs
        self.compile_backend = "eager" if smoke else "inductor"  # inductor needs minutes of C++ builds on a CPU
        self.jpegs, self.distinct_jpegs = (48, 8) if smoke else (20000, 500)
        self.e2e_batch, self.e2e_workers = (8, 1) if smoke else (256, 15)
        self.e2e_crop = 64 if smoke else 224
        self.time_scale = 3 if smoke else 1  # a smoke run on a small shared CPU is slower than the check on a GPU box
        if smoke:
            self.performance_flags = ["--device={}".format(device), "--batch_size=4", "--arch=shufflenet_v2_x0_5",
                                      "--train-crop-size=64", "--steps-per-epoch=4", "--workers=0"]
        else:
            self.performance_flags = ["--device={}".format(device), "--epochs=1", "--steps-per-epoch=100"]


# ----------------------------------------------------------------------------------------------------------
# The steps (each runs in its own process: `--step NAME`)


class Step:
    def __init__(self, name, limit_s, what):
        self.name, self.limit_s, self.what = name, limit_s, what


DEFAULT_BUDGET_S = 480  # the check's 8 minutes on a GPU box (times Sizes.time_scale)


def steps(sizes):
    """The steps in the order they run (the most important first: a short budget loses the last ones)."""
    amp = "fp16 AMP + GradScaler" if sizes.amp else "fp32"
    model_rows = "{} vs torchvision's {} in a plain loop ({}, SGD, batch {}, {}px, {} rounds x {} steps)".format(
        "ours", sizes.arch, amp, sizes.batch, sizes.image, sizes.rounds, sizes.steps)
    tests = ("fp16 AMP + scaler, bf16, channels_last, --compile, EMA, weights_only CPU load, exact resume, --evaluate, "
             "demo, ONNX, SHUFFLE_IMPL, DALI on the GPU")
    end_to_end = ("{} generated JPEGs of about 500x375 ({} distinct); main.py 1 epoch, batch {}, channels_last{}: "
                  "--dummy, the CPU loader (-j {w}), --data-backend dali (-j {w}); FPS@all and peak GPU memory").format(
                      sizes.jpegs, sizes.distinct_jpegs, sizes.e2e_batch, ", --amp" if sizes.amp else "",
                      w=sizes.e2e_workers)
    chosen = [
        Step("cuda_tests", 140, "python -m pytest tests/test_cuda.py ({})".format(tests)),
        Step("performance_1p", 90, "bash test/train_performance_1p.sh {} (synthetic): the summary's ActualFPS".format(
            " ".join(sizes.performance_flags))),
        Step("throughput", 60, "eager, NCHW and channels_last: {}, each shuffle implementation ({}); does auto pick "
                               "the faster one".format(model_rows, ", ".join(SHUFFLE_IMPLS))),
        Step("end_to_end", 120, end_to_end),
        Step("throughput_compiled", 180, "torch.compile (backend {}), channels_last then NCHW: {}".format(
            sizes.compile_backend, model_rows)),
    ]
    for step in chosen:
        step.limit_s *= sizes.time_scale
    return chosen


def emit(result):
    """Print the figures measured so far: the parent keeps the last such line, even when the step is stopped."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def peak_memory_mib(device):
    """Peak GPU memory allocated by torch in this process since the last reset (None on a CPU)."""
    if device != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2.0 ** 20, 1)


def reset_peak_memory(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


class TestOutcomes:
    """A pytest plugin that counts outcomes: passed, failed (node ids) and skip reasons."""

    def __init__(self):
        self.passed, self.failed, self.skipped = 0, [], {}

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.replace("Skipped: ", "")
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        elif report.failed:
            self.failed.append("{} ({})".format(report.nodeid, report.when))
        elif report.when == "call":
            self.passed += 1


def run_cuda_tests(sizes):
    import pytest

    outcomes = TestOutcomes()
    code = pytest.main([os.path.join(REPO_ROOT, "tests", "test_cuda.py"), "-q", "-p", "no:cacheprovider", "-rfs"],
                       plugins=[outcomes])
    emit({"exit_code": int(code), "passed": outcomes.passed, "failed": outcomes.failed,
          "skipped": outcomes.skipped})
    return int(code) == 0


def run_performance_1p(sizes, out):
    """The ModelZoo 1p performance script on synthetic data; ActualFPS from the summary file it names."""
    from modelzoo_summary import read_summary

    command = ["bash", os.path.join(REPO_ROOT, "test", "train_performance_1p.sh")] + sizes.performance_flags + [
        "--output_root={}".format(os.path.join(out, "performance_1p"))]
    result = {"command": " ".join(command)}
    process = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, PYTHON=sys.executable),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(process.stdout, flush=True)
    summaries = [line.split(": ", 1)[1] for line in process.stdout.splitlines() if line.startswith("summary: ")]
    result["exit_code"] = process.returncode
    if summaries:
        summary = read_summary(summaries[-1])
        result.update(actual_fps=float(summary["ActualFPS"]), batch_size=int(summary["BatchSize"]),
                      device_type=summary["DeviceType"], summary=summaries[-1])
    emit(result)
    return process.returncode == 0 and bool(summaries)


def _model_rows(sizes, compiled):
    """bench_model.compare rows (ours vs torchvision) per layout, each with its peak GPU memory; emitted as they
    come, channels_last first."""
    from tools import bench_model

    impls = ("auto",) if compiled else SHUFFLE_IMPLS
    if sizes.device == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for channels_last in (True, False):
        reset_peak_memory(sizes.device)
        row = bench_model.compare(sizes.arch, sizes.device, sizes.batch, rounds=sizes.rounds, steps=sizes.steps,
                                  channels_last=channels_last, amp=sizes.amp, compile_model=compiled,
                                  image_size=sizes.image, shuffle_impls=impls, compile_backend=sizes.compile_backend)
        row["peak_memory_mib"] = peak_memory_mib(sizes.device)
        rows.append(row)
        emit({"rows": rows, "shuffle_choice": shuffle_choice(rows, sizes.device) if not compiled else None})
    return True


def shuffle_choice(rows, device):
    """Per layout: the implementation `auto` takes on this device, the faster of the two here, and whether they
    are the same."""
    from models.channel_shuffle import ChannelShuffle

    picked = ChannelShuffle(4).impl_for(torch.device(device))
    choices = []
    for row in rows:
        rates = {impl: row["ours"]["ours[{}]".format(impl)]["img_s"] for impl in SHUFFLE_IMPLS[1:]}
        faster = max(rates, key=rates.get)
        choices.append({"layout": row["layout"], "auto_picks": picked, "faster": faster, "img_s": rates,
                        "auto_is_faster": picked == faster})
    return choices


def make_jpeg_folder(root, count, distinct, classes=10, seed=0):
    """root/train/<class>/ with `count` JPEGs and root/val/<class>/ with a tenth as many, about 500x375 (400-520 px
    wide, one in ten portrait), quality 90: `distinct` smooth random images with grain, each written many times
    (decoding costs what the image costs, whatever its name). Returns the number of files written."""
    rng = np.random.RandomState(seed)
    encoded = []
    for _ in range(distinct):
        width = rng.randint(400, 521)
        size = (width, width * 3 // 4) if rng.rand() >= 0.1 else (width * 3 // 4, width)
        coarse = rng.randint(0, 256, size=(size[1] // 16 + 1, size[0] // 16 + 1, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize(size, decode.BILINEAR), dtype=np.int16)
        grain = rng.randint(-12, 13, size=smooth.shape)
        buffer = tempfile.SpooledTemporaryFile()
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        buffer.seek(0)
        encoded.append(buffer.read())
    written = 0
    for split, total in (("train", count), ("val", max(classes, count // 10))):
        for index in range(total):
            folder = os.path.join(root, split, "class_{:02d}".format(index % classes))
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "{}_{:05d}.jpg".format(split, index)), "wb") as handle:
                handle.write(encoded[index % distinct])
            written += 1
    return written


def _main_run(argv, out, device):
    """main.main(argv) in this process: its epoch FPS, exit status, seconds and peak GPU memory."""
    import main

    reset_peak_memory(device)
    started = time.time()
    code = main.main(argv + ["--output-dir", out])
    record = {"exit_code": code, "seconds": round(time.time() - started, 1), "peak_memory_mib": peak_memory_mib(device)}
    metrics = os.path.join(out, "metrics.jsonl")
    if code == 0 and os.path.exists(metrics):
        with open(metrics) as handle:
            epochs = [row for row in (json.loads(line) for line in handle if line.strip()) if row["kind"] == "epoch"]
        record["fps"] = round(epochs[-1]["fps"], 1) if epochs else None
    return record


def run_end_to_end(sizes, out):
    """Generated JPEGs, then one epoch with synthetic data, the CPU loader and DALI (same model and flags)."""
    data = os.path.join(out, "end_to_end_data")
    shutil.rmtree(data, ignore_errors=True)
    started = time.time()
    files = make_jpeg_folder(data, sizes.jpegs, sizes.distinct_jpegs)
    result = {"jpegs": files, "generate_seconds": round(time.time() - started, 1)}
    emit(result)
    steps = sizes.jpegs // sizes.e2e_batch
    common = ["-a", sizes.arch, "-b", str(sizes.e2e_batch), "--epochs", "1", "--channels-last", "--device",
              sizes.device, "--lr", "0.1", "-p", "20", "--seed", "0", "--train-crop-size", str(sizes.e2e_crop),
              "--val-crop-size", str(sizes.e2e_crop), "--val-resize-size", str(sizes.e2e_crop * 8 // 7)]
    common += ["--amp"] if sizes.amp else []
    variants = [("synthetic", ["--dummy", "--steps-per-epoch", str(steps)]),
                ("cpu_loader", ["--data", data, "-j", str(sizes.e2e_workers)]),
                ("dali", ["--data", data, "-j", str(sizes.e2e_workers), "--data-backend", "dali"])]
    for name, flags in variants:
        result[name] = _main_run(common + flags, os.path.join(out, "end_to_end", name), sizes.device)
        emit(result)
    synthetic = result["synthetic"].get("fps")
    for name in ("cpu_loader", "dali"):
        fps = result[name].get("fps")
        result[name + "_over_synthetic"] = round(fps / synthetic, 3) if fps and synthetic else None
    emit(result)
    shutil.rmtree(data, ignore_errors=True)
    return all(result[name]["exit_code"] == 0 for name, _ in variants)


def run_step(name, sizes, out):
    """The body of `--step NAME` (in its own process). True when the step ran to the end."""
    if name == "cuda_tests":
        return run_cuda_tests(sizes)
    if name == "performance_1p":
        return run_performance_1p(sizes, out)
    if name in ("throughput", "throughput_compiled"):
        return _model_rows(sizes, compiled=name == "throughput_compiled")
    return run_end_to_end(sizes, out)


# ----------------------------------------------------------------------------------------------------------
# The parent: one process per step, time limits, the report


def step_command(step, args):
    command = [sys.executable, "-m", "tools.accelerator_check", "--step", step.name, "--device", args.device,
               "--out", args.out]
    return command + (["--smoke"] if args.smoke else [])


def last_result(log_path):
    """The last RESULT line a step printed, as a dict (None when it printed none)."""
    found = None
    with open(log_path, errors="replace") as handle:
        for line in handle:
            if line.startswith(RESULT_PREFIX):
                found = json.loads(line[len(RESULT_PREFIX):])
    return found


def stop_group(process, grace_s=5.0):
    """SIGTERM to the step's process group (it started its own session), SIGKILL after `grace_s`."""
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, signum)
        except OSError:  # already gone
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(step, args, limit_s):
    """Run one step in its own process with a time limit; its record for the report."""
    log_path = os.path.join(args.out, "logs", step.name + ".log")
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(step_command(step, args), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=limit_s)
            status = "ok" if code == 0 else "failed (exit {})".format(code)
        except subprocess.TimeoutExpired:
            stop_group(process)
            status = "timeout after {:.0f} s".format(limit_s)
    return {"step": step.name, "status": status, "seconds": round(time.time() - started, 1),
            "result": last_result(log_path), "log": log_path}


def goals(records, smoke):
    """The goals against what was measured (None where the step gave no figure; `met` None in a smoke run, whose
    figures mean nothing)."""
    by_step = {record["step"]: record.get("result") or {} for record in records}
    ratios = {}
    for name in ("throughput", "throughput_compiled"):
        for row in by_step.get(name, {}).get("rows", []):
            ratios["{} {}".format("compiled" if row["compile"] else "eager", row["layout"])] = row["ours"]["ours"][
                "ratio"]
    real = by_step.get("end_to_end", {})
    choices = by_step.get("throughput", {}).get("shuffle_choice") or []
    dali_ratio = real.get("dali_over_synthetic")
    return {
        "ours_over_torchvision": {"goal": GOAL_OURS_OVER_TORCHVISION, "values": ratios, "met": None if smoke else (
            bool(ratios) and max(ratios.values()) >= GOAL_OURS_OVER_TORCHVISION)},
        "dali_over_synthetic": {"goal": GOAL_REAL_OVER_SYNTHETIC, "value": dali_ratio,
                                "met": None if smoke else (dali_ratio or 0) >= GOAL_REAL_OVER_SYNTHETIC},
        "cpu_loader_over_synthetic": real.get("cpu_loader_over_synthetic"),
        "auto_shuffle_is_faster": [choice["auto_is_faster"] for choice in choices] or None,
    }


def write_report(report, out):
    text = json.dumps(report, indent=2, sort_keys=True).encode("utf-8")
    atomic_write(os.path.join(out, REPORT_NAME), lambda stream: stream.write(text))


def summary_line(record):
    """One line of figures per step for the printed report."""
    result = record.get("result") or {}
    name = record["step"]
    if name == "cuda_tests":
        return "{} passed, {} failed {}, skipped {}".format(result.get("passed"), len(result.get("failed", [])),
                                                            result.get("failed", []), result.get("skipped", {}))
    if name == "performance_1p":
        return "ActualFPS {} (batch {})".format(result.get("actual_fps"), result.get("batch_size"))
    if name in ("throughput", "throughput_compiled"):
        return "; ".join("{}: ours {} img/s vs torchvision {} (x{}){}".format(
            row["layout"], row["ours"]["ours"]["img_s"], row["torchvision_img_s"], row["ours"]["ours"]["ratio"],
            ", peak {} MiB".format(row["peak_memory_mib"]) if row["peak_memory_mib"] else "")
            for row in result.get("rows", []))
    return "; ".join("{} {} img/s".format(variant, (result.get(variant) or {}).get("fps"))
                     for variant in ("synthetic", "cpu_loader", "dali"))


def print_report(report):
    print("accelerator check: " + ", ".join("{} {}".format(k, v) for k, v in report["hardware"].items()))
    for record in report["steps"]:
        print("  {:<20} {:<22} {:>6.1f} s  {}".format(record["step"], record["status"], record["seconds"],
                                                     summary_line(record)))
    print("goals: " + json.dumps(report["goals"], sort_keys=True))


def check_device(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA GPU here (torch.cuda.is_available() is False): this check needs one; --dry-run lists "
                        "its steps, --device cpu --smoke runs them tiny on the CPU")
    if args.device == "cpu" and not args.smoke:
        raise UserError("--device cpu only proves the script: add --smoke (the figures need a GPU)")


def dry_run(args, chosen):
    print("accelerator check ({}{}), {} s budget, report {}:".format(
        args.device, ", smoke" if args.smoke else "", args.budget_s, os.path.join(args.out, REPORT_NAME)))
    for index, step in enumerate(chosen, 1):
        print("  {}. {} (at most {} s): {}".format(index, step.name, step.limit_s, step.what))
        print("     $ {}".format(" ".join(step_command(step, args))))
    return 0


def run_all(args, chosen):
    """Every chosen step in its own process within the budget; returns the exit status."""
    from bench_gpu import hardware

    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    report = {"hardware": hardware(args.device), "smoke": args.smoke, "budget_s": args.budget_s, "steps": []}
    deadline = time.time() + args.budget_s
    for index, step in enumerate(chosen, 1):
        limit_s = min(step.limit_s, deadline - time.time())
        if limit_s < 15:
            record = {"step": step.name, "status": "skipped (budget spent)", "seconds": 0.0, "result": None}
        else:
            print("[{}/{}] {} (at most {:.0f} s) ...".format(index, len(chosen), step.name, limit_s), flush=True)
            record = run_child(step, args, limit_s)
        shutil.rmtree(os.path.join(args.out, "end_to_end_data"), ignore_errors=True)  # a stopped step's JPEGs
        report["steps"].append(record)
        report["goals"] = goals(report["steps"], args.smoke)
        write_report(report, args.out)
        print("      {} in {:.0f} s: {}".format(record["status"], record["seconds"], summary_line(record)), flush=True)
    print_report(report)
    print("report: {}".format(os.path.join(args.out, REPORT_NAME)))
    return 0 if all(record["status"] == "ok" for record in report["steps"]) else 1


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the JSON report and the step logs")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and their commands; run nothing")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the check) or cpu (only with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="every step tiny: proves the script, measures nothing")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for all steps together (default {} s; three times that with --smoke)".format(
                            DEFAULT_BUDGET_S))
    parser.add_argument("--only", nargs="+", metavar="STEP", default=None, help="run only these steps")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # internal: one step, in its own process
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    names = [step.name for step in steps(Sizes(args.device, args.smoke))]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown or (args.step is not None and args.step not in names):
        raise UserError("unknown step {}: the steps are {}".format((unknown or [args.step])[0], ", ".join(names)))
    if args.budget_s is None:
        args.budget_s = float(DEFAULT_BUDGET_S * Sizes(args.device, args.smoke).time_scale)
    if not args.budget_s > 0:
        raise UserError("--budget-s must be a positive number of seconds, got {}".format(args.budget_s))
    return args


def main(argv=None):
    args = parse_args(argv)
    sizes = Sizes(args.device, args.smoke)
    if args.step is not None:
        return 0 if run_step(args.step, sizes, args.out) else 1
    chosen = [step for step in steps(sizes) if args.only is None or step.name in args.only]
    if args.dry_run:
        return dry_run(args, chosen)
    check_device(args)
    return run_all(args, chosen)


if __name__ == "__main__":
    sys.exit(run_cli(main))
