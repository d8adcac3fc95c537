"""Training-step images/s (forward + backward + SGD step) of our ShuffleNetV2 against torchvision's, same width.

Both models get the same weights, the same synthetic batch and the same optimizer settings, and take turns in
every round (the order flips each round, so a busy machine slows both alike); the figures are medians over rounds
and `ratio` is the median of the per-round ours/torchvision ratios. Every available device is measured (CPU
always; CUDA and NPU when present), in NCHW and channels_last.

    python3 -m tools.bench_model --arch shufflenet_v2_x1_0 --batch-size 32 --rounds 7 --steps 5
    python3 -m tools.bench_model --device cpu --shuffle-impl transpose index_select   # the CPU auto choice

The last line is one JSON object with every row and the smallest ratio. `compare()` is importable
(tools/bench_gpu.py uses it).
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
from training import device as devices
from training.engine import synchronize
from training.errors import UserError, run_cli

LAYOUTS = {"nchw": False, "channels_last": True}


def available_devices():
    """cpu, plus cuda and npu when this machine has them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if devices.import_torch_npu()[0] is not None:
        found.append("npu")
    return found


def torchvision_model(arch, num_classes=1000):
    import torchvision

    return getattr(torchvision.models, arch)(num_classes=num_classes)


class TrainStep:
    """One model with its SGD optimizer and AMP; `run(n)` does n training steps on a fixed synthetic batch."""

    def __init__(self, model, images, targets, device_type, amp=False, compile_model=False,
                 compile_backend=precision.DEFAULT_COMPILE_BACKEND):
        self.device_type = device_type
        self.images, self.targets = images, targets
        self.model = model.train()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
        self.amp = precision.Amp(amp, device_type)
        self.note = ""
        self.forward = self.model
        if compile_model:
            self.forward = precision.compile_model(self.model, compile_backend)  # UserError on a torch without it

    def run(self, steps):
        for _ in range(steps):
            with self.amp.autocast():
                loss = torch.nn.functional.cross_entropy(self.forward(self.images), self.targets)
            self.optimizer.zero_grad()
            self.amp.backward(loss, self.optimizer)
            self.amp.step(self.optimizer)

    def warm_up(self, steps=2):
        """First steps (kernel selection, compilation). A compile failure falls back to eager, with a note."""
        try:
            self.run(steps)
        except Exception as exc:  # torch.compile needs a C compiler / triton; eager still measures
            if self.forward is self.model:
                raise
            self.note = "compile failed, eager: {}".format(str(exc).splitlines()[0][:120] if str(exc) else exc)
            self.forward = self.model
            self.run(steps)
        synchronize(self.images.device)

    def images_per_second(self, steps, clock="wall"):
        """Wall-clock images/s, or with clock="cpu" images per CPU-second of this process (all its threads):
        on a shared CPU the latter does not count the time other programs held the cores."""
        timer = time.process_time if clock == "cpu" else time.perf_counter
        self.run(1)  # back into caches after the other model's turn
        synchronize(self.images.device)
        start = timer()
        self.run(steps)
        synchronize(self.images.device)
        return steps * self.images.shape[0] / (timer() - start)


def compare(arch, device_type, batch_size, *, rounds=5, steps=5, channels_last=False, amp=False, compile_model=False,
            image_size=224, shuffle_impls=("auto",), clock="wall", log=print,
            compile_backend=precision.DEFAULT_COMPILE_BACKEND):
    """Alternate ours (one entry per shuffle impl) and torchvision; returns a dict with medians and ratios.
    clock: "wall" (images/s) or "cpu" (images per CPU-second, CPU device only)."""
    if clock == "cpu" and device_type != "cpu":
        raise UserError("--clock cpu only measures the CPU device (an accelerator's work is not CPU time)")
    device = torch.device(device_type)
    torch.manual_seed(0)
    theirs = torchvision_model(arch)
    contenders = [("torchvision", theirs)]
    for impl in shuffle_impls:
        ours = models.build_model(arch, shuffle_impl=impl)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        contenders.append(("ours" if impl == "auto" else "ours[{}]".format(impl), ours))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=memory_format)
    targets = torch.randint(0, 1000, (batch_size,), device=device)
    steps_by_name = {}
    for name, model in contenders:
        model = model.to(device=device, memory_format=memory_format)
        steps_by_name[name] = TrainStep(model, images, targets, device_type, amp, compile_model, compile_backend)
        steps_by_name[name].warm_up()
    names = [name for name, _ in contenders]
    rates = {name: [] for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            rates[name].append(steps_by_name[name].images_per_second(steps, clock))
        log("  round {}: {}".format(round_index, ", ".join(
            "{} {:.1f}".format(name, rates[name][-1]) for name in names)))
    result = {"arch": arch, "device": device_type, "layout": "channels_last" if channels_last else "nchw",
              "batch_size": batch_size, "amp": bool(amp), "compile": bool(compile_model), "clock": clock,
              "torchvision_img_s": round(statistics.median(rates["torchvision"]), 1), "ours": {}}
    for name in names[1:]:
        ratios = [o / t for o, t in zip(rates[name], rates["torchvision"])]
        result["ours"][name] = {"img_s": round(statistics.median(rates[name]), 1),
                                "ratio": round(statistics.median(ratios), 3)}
    notes = {name: step.note for name, step in steps_by_name.items() if step.note}
    if notes:
        result["notes"] = notes
    return result


def print_table(results, out=print):
    out("{:<6} {:<13} {:>6} {:<22} {:>10} {:>12} {:>7}".format(
        "device", "layout", "batch", "model", "img/s", "torchvision", "ratio"))
    for row in results:
        for name, figures in row["ours"].items():
            out("{:<6} {:<13} {:>6} {:<22} {:>10.1f} {:>12.1f} {:>7.3f}".format(
                row["device"], row["layout"], row["batch_size"], name, figures["img_s"], row["torchvision_img_s"],
                figures["ratio"]))
        for name, note in row.get("notes", {}).items():
            out("  note ({}): {}".format(name, note))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="shufflenet_v2_x1_0", help="one of: " + ", ".join(models.MODEL_NAMES))
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32], help="one or several batch sizes")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (median over them)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model and round")
    parser.add_argument("--device", nargs="+", default=None,
                        help="cpu, cuda, npu (default: every available one)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast on CPU)")
    parser.add_argument("--channels-last", choices=("both", "on", "off"), default="both",
                        help="measure channels_last (on), NCHW (off) or both (default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (torch >= 2.0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: images/s; cpu: images per CPU-second of this process (fair on a shared CPU)")
    parser.add_argument("--shuffle-impl", nargs="+", default=["auto"], choices=("auto", "transpose", "index_select"),
                        help="our channel-shuffle implementation(s) to measure, each against torchvision")
    return parser.parse_args(argv)


def check_args(args):
    if args.arch not in models.MODEL_NAMES:
        raise UserError("unknown --arch {!r}; choose from: {}".format(args.arch, ", ".join(models.MODEL_NAMES)))
    for name, value in (("--rounds", args.rounds), ("--steps", args.steps), ("--image-size", args.image_size)):
        if value < 1:
            raise UserError("{} must be at least 1, got {}".format(name, value))
    if any(b < 1 for b in args.batch_size):
        raise UserError("--batch-size must be positive, got {}".format(args.batch_size))
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1, got {}".format(args.threads))
    if args.compile and not hasattr(torch, "compile"):
        raise UserError("--compile needs torch >= 2.0 (this is torch {})".format(torch.__version__))
    found = [devices.resolve_device_type(d) for d in args.device] if args.device else available_devices()
    if args.clock == "cpu" and found != ["cpu"]:
        raise UserError("--clock cpu only measures the CPU: add --device cpu")
    return found


def main(argv=None):
    args = parse_args(argv)
    device_types = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    layouts = {"both": ["nchw", "channels_last"], "on": ["channels_last"], "off": ["nchw"]}[args.channels_last]
    print("torch {}, {} CPU threads, arch {}, image {}, amp {}, compile {}".format(
        torch.__version__, torch.get_num_threads(), args.arch, args.image_size, args.amp, args.compile))
    results = []
    for device_type in device_types:
        for layout in layouts:
            for batch_size in args.batch_size:
                print("{} {} batch {}:".format(device_type, layout, batch_size))
                results.append(compare(args.arch, device_type, batch_size, rounds=args.rounds, steps=args.steps,
                                       channels_last=LAYOUTS[layout], amp=args.amp, compile_model=args.compile,
                                       image_size=args.image_size, shuffle_impls=tuple(args.shuffle_impl),
                                       clock=args.clock))
    print_table(results)
    ratios = [f["ratio"] for row in results for f in row["ours"].values()]
    print(json.dumps({"results": results, "min_ratio": min(ratios)}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
