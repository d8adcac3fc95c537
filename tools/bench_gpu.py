"""The prepared GPU benchmark: training images/s of ours vs torchvision's shufflenet_v2_x1_0 on one GPU, plus
the images/s our real input pipeline delivers with all CPU cores.

Both models train in one loop with the same settings: AMP (float16 + GradScaler), channels_last, torch.compile
where it works (a compile failure falls back to eager and says so), synthetic 224x224 batches of 256 and 1024,
taking turns in every round (tools/bench_model.py's compare()). The loader figure comes from
tools/bench_loader.py on generated ImageNet-like JPEGs (or --data). It refuses, with one line, when no GPU is
present; `--device cpu --tiny` is a seconds-long dry run of the same code for CI.

    python3 -m tools.bench_gpu                       # on a machine with a CUDA GPU
    python3 -m tools.bench_gpu --device cpu --tiny   # dry run anywhere

The last line is one JSON object with the hardware, every row and the loader figure.
"""
import argparse
import json
import os
import platform
import sys
import tempfile

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import torch

from tools import bench_model
from training import device as devices
from training.errors import UserError, run_cli

ARCH = "shufflenet_v2_x1_0"


def hardware(device_type):
    """What the figures were measured on, for the READMEs."""
    info = {"torch": torch.__version__, "cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    if device_type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    elif device_type == "npu":
        info["npu"] = torch.npu.get_device_name(0) if hasattr(torch.npu, "get_device_name") else "npu"
    return info


def check_device(name, tiny):
    """The device to measure; UserError (one line) when it is absent or a CPU run is not a dry run."""
    if name == "cpu":
        if not tiny:
            raise UserError("--device cpu is only a dry run of this GPU benchmark: add --tiny "
                            "(CPU figures: tools/bench_model.py)")
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA GPU here (torch.cuda.is_available() is False); this benchmark needs one "
                        "(dry run: --device cpu --tiny)")
    return devices.resolve_device_type(name)


def loader_rate(data_dir, images, batch_size, workers, batches):
    """Our training loader's images/s with `workers` processes (tools/bench_loader.py), on `data_dir` or on
    `images` generated JPEGs in a temporary folder. Returns a dict; an unavailable loader gives its reason."""
    try:
        from tools import bench_loader
    except Exception as exc:  # the loader benchmark belongs to the data pipeline; report, don't fail the GPU run
        return {"error": "tools/bench_loader.py unavailable: {}".format(exc)}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        if data_dir is None:
            bench_loader.make_data(tmp, images)
            data_dir = tmp
        img_s, cpu_ms = bench_loader.run_ours(bench_loader.train_folder(data_dir), batch_size, workers, batches, 0.2)
    return {"img_s": round(img_s, 1), "cpu_ms_per_img": round(cpu_ms, 2), "workers": workers,
            "batch_size": batch_size}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--device", default="cuda", choices=("cuda", "npu", "cpu"),
                        help="cuda (default), npu, or cpu for a --tiny dry run")
    parser.add_argument("--tiny", action="store_true",
                        help="dry run: batch 4, 64x64 images, 1 round of 1 step, 16 loader images, 1 worker")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and round")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile both models (auto: on for a GPU, off for the CPU dry run)")
    parser.add_argument("--data", default=None, help="an image folder for the loader figure (default: generated)")
    parser.add_argument("--loader-images", type=int, default=2560, help="JPEGs to generate for the loader figure")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="loader processes (all cores)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader figure")
    args = parser.parse_args(argv)
    for name, value in (("--batch-size", min(args.batch_size)), ("--rounds", args.rounds), ("--steps", args.steps),
                        ("--loader-images", args.loader_images), ("--loader-batches", args.loader_batches)):
        if value < 1:
            raise UserError("{} must be at least 1, got {}".format(name, value))
    if args.workers < 0:  # checked here too, not only by the loader after minutes of GPU figures
        raise UserError("--workers must be 0 or more, got {}".format(args.workers))
    if args.tiny:
        args.batch_size, args.rounds, args.steps = [4], 1, 1
        args.loader_images, args.loader_batches, args.workers = 16, 2, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    device_type = check_device(args.device, args.tiny)
    if args.data is not None and not os.path.isdir(args.data):
        raise UserError("--data {} is not a folder".format(args.data))
    compile_model = args.compile == "on" or (args.compile == "auto" and device_type != "cpu")
    if compile_model and not hasattr(torch, "compile"):
        print("note: torch {} has no torch.compile; measuring eager".format(torch.__version__))
        compile_model = False
    image_size = 64 if args.tiny else 224
    amp = device_type != "cpu"  # the CPU dry run skips bfloat16 autocast: slow on most CPUs, not the GPU path
    info = hardware(device_type)
    print("hardware: " + ", ".join("{} {}".format(k, v) for k, v in info.items()))
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device_type == "cpu":
        torch.set_num_threads(1)  # dry run: one thread is fast and immune to other programs on the cores
    rows = []
    for batch_size in args.batch_size:
        print("{} channels_last amp={} compile={} batch {}:".format(device_type, amp, compile_model, batch_size))
        rows.append(bench_model.compare(ARCH, device_type, batch_size, rounds=args.rounds, steps=args.steps,
                                        channels_last=True, amp=amp, compile_model=compile_model,
                                        image_size=image_size))
    bench_model.print_table(rows)
    loader = None
    if not args.no_loader:
        loader_batch = 8 if args.tiny else 256
        loader = loader_rate(args.data, args.loader_images, loader_batch, args.workers, args.loader_batches)
        if "error" in loader:
            print("loader: " + loader["error"])
        else:
            print("loader (ours, {} workers, batch {}): {:.1f} img/s, {:.2f} CPU ms/img".format(
                loader["workers"], loader["batch_size"], loader["img_s"], loader["cpu_ms_per_img"]))
    print(json.dumps({"hardware": info, "tiny": args.tiny, "results": rows, "loader": loader}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
