"""CPU cost and images/s of our training input pipeline against torchvision's standard one, on the same files.

Ours: training/loaders.py's train loader (header-size crop box, DCT-scaled JPEG decoding with simplejpeg, one
OpenCV warp, uint8 collate; Pillow where the fast path is off or refuses a file) plus DevicePreprocess (float,
colour jitter, normalization), run on the CPU in this process as main.py does when the device is the CPU.
torchvision: ImageFolder + RandomResizedCrop -> ColorJitter -> RandomHorizontalFlip -> ToTensor -> Normalize,
default collate. The two alternate in rounds (the machine may be shared); figures are medians. CPU seconds of
this process and its workers are counted, so the per-core cost is visible whatever the worker count:

- `ratio_per_cpu_second`: torchvision's CPU ms per image / our loader's (decode .. collate): our CPU work when
  the model runs on an accelerator (normalization and jitter run there);
- `ratio_per_cpu_second_with_cpu_preprocess`: the same with DevicePreprocess on the CPU added to ours;
- `stages_cpu_ms`: our per-image CPU ms per stage in one process (read, header, decode, resize, collate, device);
- `workers_img_s`: our loader's images/s (no preprocessing) with 1 .. --max-workers workers.

    python3 -m tools.bench_loader --make-data /tmp/bench_data --count 1000
    python3 -m tools.bench_loader --data /tmp/bench_data --workers 0 --batches 20 --rounds 5

`SHUFFLENET_FAST_DECODE=0` measures the Pillow path. The last line is one JSON object.
"""
import argparse
import io
import json
import os
import random
import statistics
import sys
import time

import training  # noqa: F401  (bootstrap, before torch: see training/__init__.py)
import numpy as np
import torch
from PIL import Image

from training import compat  # noqa: E402
from training.data import decode  # noqa: E402
from training.data import device_preprocess
from training.data import loaders
from training.errors import UserError, run_cli


def make_data(out_dir, count, classes=10, seed=0):
    """ImageNet-like JPEGs (quality 90, about 510x400 on average, one in eight 700-1100 px long) cut from the two
    photos scikit-learn ships; out_dir/train/<class>/ gets `count` images, out_dir/val/<class>/ a tenth."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    rng = np.random.RandomState(seed)
    sizes = []
    for split, total in (("train", count), ("val", max(classes, count // 10))):
        for k in range(total):
            folder = os.path.join(out_dir, split, "class_{:02d}".format(k % classes))
            os.makedirs(folder, exist_ok=True)
            long_side = rng.randint(700, 1100) if rng.rand() < 1.0 / 8 else rng.randint(400, 520)
            portrait = rng.rand() < 0.1
            size = (long_side * 3 // 4, long_side) if portrait else (long_side, long_side * 3 // 4)
            source = photos[k % len(photos)]
            src_w, src_h = source.size
            crop_w = rng.randint(src_w // 2, src_w + 1)
            crop_h = min(src_h, crop_w * size[1] // size[0])
            crop_w = crop_h * size[0] // size[1]
            left, top = rng.randint(0, src_w - crop_w + 1), rng.randint(0, src_h - crop_h + 1)
            image = source.resize(size, decode.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
            if rng.rand() < 0.5:
                image = image.transpose(decode.FLIP_LEFT_RIGHT)
            path = os.path.join(folder, "{}_{:05d}.jpg".format(split, k))
            image.save(path + ".part", format="JPEG", quality=90)
            os.replace(path + ".part", path)  # an interrupted run leaves no half-written JPEG behind
            sizes.append(size)
    mean_w, mean_h = np.mean(sizes, axis=0)
    print("wrote {} train + {} val JPEGs to {} (mean {:.0f}x{:.0f})".format(
        count, len(sizes) - count, out_dir, mean_w, mean_h))


def _cpu_seconds(pids):
    """User + system CPU seconds of this process and the given worker processes (Linux /proc; else this one)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            with open("/proc/{}/stat".format(pid)) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / float(ticks)
        except (OSError, IndexError, ValueError):
            pass
    return total


def _worker_pids(iterator):
    workers = getattr(iterator, "_workers", None) or []  # private DataLoader attribute; CPU count degrades without
    return [w.pid for w in workers]


def _measure(batches, count, batch_size, work, pids):
    """(images/s, CPU ms per image) over `count` batches after one warm-up batch (worker start-up excluded)."""
    work(next(batches))
    return _measure_after_warmup(batches, count, batch_size, work, pids)


def _endless(loader, sampler=None):
    """Batches across as many epochs as needed."""
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_folder(path):
    """path/train when there is one (a data set root), else path itself (a train folder)."""
    train = os.path.join(path, "train")
    return train if os.path.isdir(train) else path


def run_ours(train_dir, batch_size, workers, batches, jitter):
    """(images/s, CPU ms per image of loader + DevicePreprocess on the CPU): as before, for tools/bench_gpu.py."""
    img_s, loader_ms, preprocess_ms = measure_ours(train_dir, batch_size, workers, batches, jitter)
    return img_s, loader_ms + preprocess_ms


def measure_ours(train_dir, batch_size, workers, batches, jitter, preprocessing=True):
    """(images/s, loader CPU ms per image, DevicePreprocess CPU ms per image)."""
    loader, sampler = loaders.build_train_loader(train_dir, batch_size, workers, crop_size=224, seed=0)
    preprocess = device_preprocess.DevicePreprocess(jitter=jitter)
    spent = [0.0]

    def work(batch):
        if preprocessing:
            start = time.process_time()
            preprocess(batch[0], train=True)
            spent[0] += time.process_time() - start

    pids = lambda: _worker_pids(getattr(loader.loader, "_iterator", None))  # noqa: E731
    batches_iter = _endless(loader, sampler)
    work(next(batches_iter))  # warm-up (worker start-up), not counted
    spent[0] = 0.0
    img_s, cpu_ms = _measure_after_warmup(batches_iter, batches, batch_size, work, pids)
    preprocess_ms = spent[0] * 1000.0 / (batches * batch_size)
    return img_s, cpu_ms - preprocess_ms, preprocess_ms


def _measure_after_warmup(batches, count, batch_size, work, pids):
    """(images/s, CPU ms per image) over the next `count` batches."""
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds(pids())
    for _ in range(count):
        work(next(batches))
    wall = time.perf_counter() - start_wall
    cpu = _cpu_seconds(pids()) - start_cpu
    return count * batch_size / wall, cpu * 1000.0 / (count * batch_size)


def run_torchvision(train_dir, batch_size, workers, batches, jitter):
    import torchvision.datasets as datasets
    import torchvision.transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(224), T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(decode.MEAN, decode.STD)])
    dataset = datasets.ImageFolder(train_dir, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, **compat.loader_worker_options(workers))
    pids = lambda: _worker_pids(getattr(loader, "_iterator", None))  # noqa: E731
    return _measure(_endless(loader), batches, batch_size, lambda batch: None, pids)


class StageClock:
    """CPU seconds per named stage (process time: other processes on a shared machine do not count)."""

    def __init__(self):
        self.seconds = {}
        self._start = None

    def start(self):
        self._start = time.process_time()

    def lap(self, name):
        now = time.process_time()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._start
        self._start = now


def _one_sample(path, rng, clock):
    """One training sample, timed stage by stage, on the path the loader takes for this file."""
    modules = decode.fast_modules() if decode.fast_decode_enabled() else None
    clock.start()
    with open(path, "rb") as handle:
        raw = handle.read()
    clock.lap("read")
    size = decode.jpeg_size(raw, modules[0]) if modules else None
    if size is None:
        image, box = decode.open_reduced(io.BytesIO(raw), lambda w, h: _train_box(w, h, rng), 224)
        clock.lap("decode")  # Pillow: header and decode in one
        out = decode.resize_box(image, box, 224, flip=rng.random() < 0.5)
        clock.lap("resize")
        return out
    box = _train_box(size[0], size[1], rng)
    reduction = decode.dct_reduction(size[0], size[1], box, 224)
    clock.lap("header")
    decoded = decode.scaled_decode(raw, size, reduction, modules[0])
    clock.lap("decode")
    out = decode.warp_box(decoded, tuple(v / float(reduction) for v in box), 224, modules[1])
    out = out[:, ::-1] if rng.random() < 0.5 else out
    clock.lap("resize")
    return out


def _train_box(width, height, rng):
    left, top, crop_w, crop_h = decode.random_crop_box(width, height, rng)
    return left, top, left + crop_w, top + crop_h


def stage_costs(train_dir, count, batch_size, jitter):
    """Our CPU ms per image per stage, in this process on `count` images: read, header, decode, resize (+flip),
    collate, device (DevicePreprocess on the CPU)."""
    samples, _ = loaders.scan_folder(train_dir)
    rng = random.Random(0)
    paths = [samples[rng.randrange(len(samples))][0] for _ in range(count)]
    clock = StageClock()
    items = [(np.asarray(_one_sample(path, rng, clock)), 0, [], None) for path in paths]
    preprocess = device_preprocess.DevicePreprocess(jitter=jitter)
    batched = 0
    for first in range(0, len(items) - batch_size + 1, batch_size):
        clock.start()
        images = loaders.collate(items[first:first + batch_size])[0]
        clock.lap("collate")
        preprocess(images, train=True)
        clock.lap("device")
        batched += batch_size
    return {name: round(value * 1000.0 / (max(1, batched) if name in ("collate", "device") else count), 3)
            for name, value in clock.seconds.items()}


def worker_sweep(train_dir, batch_size, max_workers, batches, jitter):
    """Our loader's images/s (wall, no preprocessing) with 1 .. max_workers workers."""
    sweep = {}
    for workers in range(1, max_workers + 1):
        img_s = measure_ours(train_dir, batch_size, workers, batches, jitter, preprocessing=False)[0]
        sweep[str(workers)] = round(img_s, 1)
    return sweep


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="an image folder root with train/ (or a train folder itself)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pipeline and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/torchvision rounds")
    parser.add_argument("--jitter", type=float, default=0.2, help="ColorJitter strength (ModelZoo 0.2)")
    parser.add_argument("--make-data", metavar="DIR", help="write ImageNet-like JPEGs to DIR and exit")
    parser.add_argument("--count", type=int, default=1000, help="images for --make-data")
    parser.add_argument("--max-workers", type=int, default=0,
                        help="also measure our loader's img/s with 1 .. N workers (0: skip)")
    args = parser.parse_args(argv)
    if args.max_workers < 0 or args.workers < 0:
        raise UserError("--workers and --max-workers must be 0 or more")
    for name, value in (("--batches", args.batches), ("--batch-size", args.batch_size), ("--rounds", args.rounds),
                        ("--count", args.count)):
        if value < 1:
            raise UserError("{} must be at least 1, got {}".format(name, value))
    return args


def alternating_rounds(args, train_dir):
    """([(img/s, loader CPU ms/img, CPU-preprocess ms/img)] ours, [(img/s, CPU ms/img)] torchvision), interleaved."""
    ours, theirs = [], []
    for round_index in range(args.rounds):
        img_s, loader_ms, preprocess_ms = measure_ours(train_dir, args.batch_size, args.workers, args.batches,
                                                       args.jitter)
        ours.append((img_s, loader_ms, preprocess_ms))
        print("round {} ours         {:8.1f} img/s  {:6.2f} CPU ms/img loader + {:5.2f} DevicePreprocess on the CPU"
              .format(round_index, img_s, loader_ms, preprocess_ms))
        img_s, cpu_ms = run_torchvision(train_dir, args.batch_size, args.workers, args.batches, args.jitter)
        theirs.append((img_s, cpu_ms))
        print("round {} torchvision  {:8.1f} img/s  {:6.2f} CPU ms/img".format(round_index, img_s, cpu_ms))
    return ours, theirs


def summary(args, ours, theirs, stages, sweep):
    median = statistics.median
    return {
        "fast_decode": decode.fast_decode_enabled(),
        "ours_img_s": round(median(o[0] for o in ours), 1),
        "torchvision_img_s": round(median(t[0] for t in theirs), 1),
        "ratio": round(median(o[0] / t[0] for o, t in zip(ours, theirs)), 2),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "rounds": args.rounds,
        "ours_loader_cpu_ms_per_img": round(median(o[1] for o in ours), 3),
        "ours_cpu_preprocess_ms_per_img": round(median(o[2] for o in ours), 3),
        "torchvision_cpu_ms_per_img": round(median(t[1] for t in theirs), 3),
        "ratio_per_cpu_second": round(median(t[1] / max(o[1], 1e-9) for o, t in zip(ours, theirs)), 2),
        "ratio_per_cpu_second_with_cpu_preprocess": round(
            median(t[1] / max(o[1] + o[2], 1e-9) for o, t in zip(ours, theirs)), 2),
        "stages_cpu_ms": stages,
        "workers_img_s": sweep,
    }


def main(argv=None):
    args = parse_args(argv)
    if args.make_data:
        make_data(args.make_data, args.count)
        return 0
    if not args.data:
        raise UserError("give --data DIR (or --make-data DIR first)")
    train_dir = train_folder(args.data)
    torch.set_num_threads(1)  # per-core figures: the device-side work on the CPU uses one core
    for path, _ in loaders.scan_folder(train_dir)[0]:  # read every file once so both pipelines find it cached
        with open(path, "rb") as handle:
            handle.read()
    ours, theirs = alternating_rounds(args, train_dir)
    stages = stage_costs(train_dir, min(256, 4 * args.batch_size), args.batch_size, args.jitter)
    print("ours, one process, CPU ms/img per stage: {}".format(", ".join(
        "{} {:.3f}".format(name, value) for name, value in stages.items())))
    sweep = worker_sweep(train_dir, args.batch_size, args.max_workers, args.batches, args.jitter) \
        if args.max_workers else {}
    for workers, img_s in sweep.items():
        print("ours, loader only, {} workers: {:8.1f} img/s".format(workers, img_s))
    print(json.dumps(summary(args, ours, theirs, stages, sweep)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
