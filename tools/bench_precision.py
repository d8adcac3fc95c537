"""Training-step throughput on this CPU in fp32 and in bf16 autocast, side by side, as main.py's `--amp` chooses.

main.py's `--amp` on a CPU trains in bf16 only where the CPU does bf16 in hardware (training/precision.py:
avx512_bf16 / amx_bf16 / Arm bf16), else in fp32. This measures both on the same model, weights and synthetic
batch, taking turns every round (the order flips each round, so a busy machine slows both alike). Figures are
medians over rounds: images/s of wall-clock time, and images per CPU-second of this process (all its threads; on a
shared machine it leaves out the time other programs held the cores); `bf16/fp32` is the median of the per-round
ratios.

    python -m tools.bench_precision --batch-size 8 --rounds 5 --steps 3
    python -m tools.bench_precision --arch shufflenet_v2_x0_5 --threads 2 --channels-last

The last line is one JSON object with every figure.
"""
import argparse
import json
import statistics
import sys
import time

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import torch

import models
from training import precision
from tools import bench_model
from training.errors import UserError, run_cli

PRECISIONS = ("fp32", "bf16")


def build_steps(arch, batch_size, image_size, channels_last):
    """{precision: bench_model.TrainStep}: two copies of one model (same weights), the same batch, on the CPU."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch_size, 3, image_size, image_size).to(memory_format=memory_format)
    targets = torch.randint(0, 1000, (batch_size,))
    first = models.build_model(arch)
    steps = {}
    for name in PRECISIONS:
        model = models.build_model(arch)
        model.load_state_dict(first.state_dict())
        # bench_model.TrainStep's amp is precision.Amp(True, "cpu"): bf16 autocast whatever the CPU has
        steps[name] = bench_model.TrainStep(model.to(memory_format=memory_format), images, targets, "cpu",
                                            amp=name == "bf16")
        steps[name].warm_up()
    return steps


def measure(step, steps):
    """(images per wall-clock second, images per CPU-second of this process) over `steps` training steps."""
    step.run(1)  # back into caches after the other precision's turn
    wall, cpu = time.perf_counter(), time.process_time()
    step.run(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = steps * step.images.shape[0]
    return images / wall, images / cpu


def compare(steps_by_name, *, rounds, steps, log=print):
    """Medians per precision and the medians of the per-round bf16/fp32 ratios, for both clocks."""
    rates = {name: {"wall": [], "cpu": []} for name in PRECISIONS}
    for round_index in range(rounds):
        order = PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]
        for name in order:
            wall, cpu = measure(steps_by_name[name], steps)
            rates[name]["wall"].append(wall)
            rates[name]["cpu"].append(cpu)
        log("  round {}: {}".format(round_index, ", ".join("{} {:.2f} img/s ({:.2f} img/CPU-s)".format(
            name, rates[name]["wall"][-1], rates[name]["cpu"][-1]) for name in PRECISIONS)))
    result = {name: {clock: round(statistics.median(values), 3) for clock, values in rates[name].items()}
              for name in PRECISIONS}
    result["bf16/fp32"] = {clock: round(statistics.median(
        b / f for b, f in zip(rates["bf16"][clock], rates["fp32"][clock])), 3) for clock in ("wall", "cpu")}
    return result


def print_table(result, out=print):
    out("{:<10} {:>12} {:>14}".format("precision", "img/s", "img/CPU-s"))
    for name in PRECISIONS + ("bf16/fp32",):
        out("{:<10} {:>12.3f} {:>14.3f}".format(name, result[name]["wall"], result[name]["cpu"]))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="shufflenet_v2_x1_0", help="one of: " + ", ".join(models.MODEL_NAMES))
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (command 1 on a CPU: 8)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median over them)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per precision and round")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.arch not in models.MODEL_NAMES:
        raise UserError("unknown --arch {!r}; choose from: {}".format(args.arch, ", ".join(models.MODEL_NAMES)))
    for name in ("batch_size", "rounds", "steps", "image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError("--{} must be at least 1, got {}".format(name.replace("_", "-"), value))
    return args


def main(argv=None):
    args = parse_args(argv)
    if not hasattr(torch, "autocast"):
        raise UserError("bf16 autocast on a CPU needs torch.autocast (torch >= 1.10); this torch is {}".format(
            torch.__version__))
    if args.threads:
        torch.set_num_threads(args.threads)
    feature = precision.native_bf16_feature()
    chosen = "bf16" if precision.choose_dtype(True, "cpu")[0] is not None else "fp32"
    print("torch {}, {} CPU threads, arch {}, batch {}, image {}{}; native bf16: {}; main.py --amp here: {}".format(
        torch.__version__, torch.get_num_threads(), args.arch, args.batch_size, args.image_size,
        ", channels_last" if args.channels_last else "", feature or "none", chosen))
    steps = build_steps(args.arch, args.batch_size, args.image_size, args.channels_last)
    result = compare(steps, rounds=args.rounds, steps=args.steps)
    print_table(result)
    print(json.dumps(dict(result, arch=args.arch, batch_size=args.batch_size, image_size=args.image_size,
                          threads=torch.get_num_threads(), native_bf16=feature, amp_choice=chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
