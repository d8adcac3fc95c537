"""What the checkpoint digest costs: save and load of one main.py checkpoint with and without it, side by side.

The checkpoint is the one main.py writes for `--arch` (default x1.0, 1000 classes) after one SGD step with momentum,
so it holds the weights, the optimizer's momentum buffers, the RNG state and, with --ema, the EMA weights. Each
round times, in turns (the order flips each round, so a busy machine slows both alike):
- save: atomic_save (serialize in memory, write a temp file, fsync, rename) of the dict without a digest, against
  computing the digest (training/checkpoints/digest.py) and then the same atomic_save;
- load: torch_load of the file (weights_only / the restricted unpickler), against load_checkpoint, which also checks
  the digest and the fields.
Figures are medians over rounds, wall time and CPU time of this process (time.process_time) in ms; the last column
is the digest's share. The last line is one JSON object.

    python3 -m tools.bench_checkpoint --rounds 7
    python3 -m tools.bench_checkpoint --arch shufflenet_v2_x0_5 --ema --folder /mnt/ssd/tmp
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import torch

import models
from training.checkpoints import checkpoint as ckpt
from training.checkpoints import digest
from training.errors import UserError, run_cli


def training_checkpoint(arch, ema):
    """The dict main.py saves after one SGD step (momentum buffers filled), without its digest."""
    model = models.build_model(arch, num_classes=1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-5)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    ema_state = {k: v.clone() for k, v in model.state_dict().items()} if ema else None
    sealed = ckpt.build_checkpoint(1, arch, model.state_dict(), optimizer.state_dict(), 0.0, {"arch": arch},
                                   ema_state=ema_state)
    return {key: value for key, value in sealed.items() if key != digest.DIGEST_KEY}


def timed(function, *args):
    """(wall ms, CPU ms) of one call of function(*args)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def save_plain(data, path):
    ckpt.atomic_save(data, path)


def save_with_digest(data, path):
    ckpt.atomic_save(digest.with_digest(data), path)


def load_plain(path):
    ckpt.torch_load(path)


def load_checked(path):
    ckpt.load_checkpoint(path)


def measure(data, folder, rounds):
    """{row: {"plain": [(wall, cpu)...], "digest": [...]}} over `rounds` rounds."""
    plain_path, sealed_path = os.path.join(folder, "plain.pth.tar"), os.path.join(folder, "sealed.pth.tar")
    rows = {"save": {"plain": [], "digest": []}, "load": {"plain": [], "digest": []}}
    calls = [("save", "plain", save_plain, (data, plain_path)),
             ("save", "digest", save_with_digest, (data, sealed_path)),
             ("load", "plain", load_plain, (sealed_path,)),
             ("load", "digest", load_checked, (sealed_path,))]
    for index in range(rounds):
        for row, name, function, args in (calls if index % 2 == 0 else calls[::-1]):
            rows[row][name].append(timed(function, *args))
    return rows


def median(samples, column):
    return statistics.median(sample[column] for sample in samples)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Save/load time of a main.py checkpoint with and without its "
                                                 "content digest.")
    parser.add_argument("--arch", default="shufflenet_v2_x1_0", choices=models.MODEL_NAMES)
    parser.add_argument("--ema", action="store_true", help="include EMA weights, as --model-ema runs save")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--folder", help="where the files are written (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise UserError("--rounds must be >= 1, got {}".format(args.rounds))
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    data = training_checkpoint(args.arch, args.ema)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        rows = measure(data, folder, args.rounds)
        size = os.path.getsize(os.path.join(folder, "sealed.pth.tar"))
    digest_ms = [timed(digest.compute, data) for _ in range(args.rounds)]
    print("{} checkpoint{}: {:.1f} MB, torch {}, {} rounds; medians in ms".format(
        args.arch, " with EMA" if args.ema else "", size / 1e6, torch.__version__, args.rounds))
    print("{:<6} {:>12} {:>12} {:>12} {:>12} {:>14}".format("", "wall plain", "wall digest", "CPU plain",
                                                            "CPU digest", "digest share"))
    summary = {"arch": args.arch, "ema": args.ema, "megabytes": round(size / 1e6, 2), "torch": torch.__version__,
               "digest_only_ms": round(median(digest_ms, 0), 2)}
    for row, samples in rows.items():
        walls = [median(samples[name], 0) for name in ("plain", "digest")]
        cpus = [median(samples[name], 1) for name in ("plain", "digest")]
        share = (walls[1] - walls[0]) / walls[1] if walls[1] else 0.0
        print("{:<6} {:>12.1f} {:>12.1f} {:>12.1f} {:>12.1f} {:>13.0%}".format(row, walls[0], walls[1], cpus[0],
                                                                             cpus[1], share))
        summary[row] = {"wall_ms": [round(w, 2) for w in walls], "cpu_ms": [round(c, 2) for c in cpus]}
    print("digest alone: {:.1f} ms wall, {:.1f} ms CPU".format(median(digest_ms, 0), median(digest_ms, 1)))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
