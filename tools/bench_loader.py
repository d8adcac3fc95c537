"""Images/s of our training input pipeline against torchvision's standard one, on the same files, in one run.

Ours: training/data.py's loader (header-size crop box, reduced JPEG decoding, one resize, uint8 collate) plus
DevicePreprocess (float, colour jitter, normalization) on the CPU in this process: the work main.py does when
the device is the CPU. torchvision: ImageFolder + RandomResizedCrop -> ColorJitter -> RandomHorizontalFlip ->
ToTensor -> Normalize, default collate. The two alternate in rounds (the machine may be shared); the figures
are medians. CPU seconds of this process and its workers are counted too, so the per-core cost is visible even
when the main process and a worker run side by side.

    python tools/bench_loader.py --make-data /tmp/bench_data --count 1000
    python tools/bench_loader.py --data /tmp/bench_data --workers 1 --batches 20

The last line is one JSON object (ours_img_s, torchvision_img_s, ratio, workers, ...).
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import training  # noqa: E402,F401  (bootstrap, before torch: see training/__init__.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from training import augment, data  # noqa: E402
from training.errors import UserError, run_cli  # noqa: E402


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
            image = source.resize(size, augment.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
            if rng.rand() < 0.5:
                image = image.transpose(augment.FLIP_LEFT_RIGHT)
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
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds(pids())
    for _ in range(count):
        work(next(batches))
    wall = time.perf_counter() - start_wall
    cpu = _cpu_seconds(pids()) - start_cpu
    return count * batch_size / wall, cpu * 1000.0 / (count * batch_size)


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
    loader, sampler = data.build_train_loader(train_dir, batch_size, workers, crop_size=224, seed=0)
    preprocess = data.DevicePreprocess(jitter=jitter)

    def work(batch):
        preprocess(batch[0], train=True)

    pids = lambda: _worker_pids(getattr(loader.loader, "_iterator", None))  # noqa: E731
    return _measure(_endless(loader, sampler), batches, batch_size, work, pids)


def run_torchvision(train_dir, batch_size, workers, batches, jitter):
    import torchvision.datasets as datasets
    import torchvision.transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(224), T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(data.MEAN, data.STD)])
    dataset = datasets.ImageFolder(train_dir, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    pids = lambda: _worker_pids(getattr(loader, "_iterator", None))  # noqa: E731
    return _measure(_endless(loader), batches, batch_size, lambda batch: None, pids)


def stage_shares(train_dir, count, batch_size, jitter):
    """Where our CPU time goes, in this process on `count` images: decode, resize+flip, collate, device work.

    CPU time, not wall time, so other processes on a shared machine do not distort the shares."""
    samples, _ = data.scan_folder(train_dir)
    rng = random.Random(0)
    paths = [samples[rng.randrange(len(samples))][0] for _ in range(count)]

    def box_fn(width, height):
        left, top, crop_w, crop_h = augment.random_crop_box(width, height, rng)
        return left, top, left + crop_w, top + crop_h

    seconds = {"decode": 0.0, "resize": 0.0, "collate": 0.0, "device": 0.0}
    items = []
    for path in paths:
        start = time.process_time()
        image, box = augment.open_reduced(path, box_fn, 224)
        middle = time.process_time()
        out = augment.resize_box(image, box, 224, flip=rng.random() < 0.5)
        items.append((np.asarray(out), 0, [], None))
        seconds["decode"] += middle - start
        seconds["resize"] += time.process_time() - middle
    preprocess = data.DevicePreprocess(jitter=jitter)
    batched = 0
    for first in range(0, len(items) - batch_size + 1, batch_size):
        start = time.process_time()
        images = data.collate(items[first:first + batch_size])[0]
        middle = time.process_time()
        preprocess(images, train=True)
        seconds["collate"] += middle - start
        seconds["device"] += time.process_time() - middle
        batched += batch_size
    per_image = {name: value / (count if name in ("decode", "resize") else max(1, batched))
                 for name, value in seconds.items()}
    total = sum(per_image.values())
    return {name: round(value / total, 3) for name, value in per_image.items()}, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="an image folder root with train/ (or a train folder itself)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pipeline and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/torchvision rounds")
    parser.add_argument("--jitter", type=float, default=0.2, help="ColorJitter strength (ModelZoo 0.2)")
    parser.add_argument("--make-data", metavar="DIR", help="write ImageNet-like JPEGs to DIR and exit")
    parser.add_argument("--count", type=int, default=1000, help="images for --make-data")
    args = parser.parse_args(argv)
    for name, value in (("--batches", args.batches), ("--rounds", args.rounds), ("--count", args.count)):
        if value < 1:
            raise UserError("{} must be at least 1, got {}".format(name, value))
    if args.make_data:
        make_data(args.make_data, args.count)
        return 0
    if not args.data:
        raise UserError("give --data DIR (or --make-data DIR first)")
    train_dir = train_folder(args.data)
    torch.set_num_threads(1)  # per-core figures: the device-side work on the CPU uses one core
    for path, _ in data.scan_folder(train_dir)[0]:  # read every file once so both pipelines find it cached
        with open(path, "rb") as handle:
            handle.read()
    ours, theirs = [], []
    for round_index in range(args.rounds):
        for name, runner, results in (("ours", run_ours, ours), ("torchvision", run_torchvision, theirs)):
            img_s, cpu_ms = runner(train_dir, args.batch_size, args.workers, args.batches, args.jitter)
            results.append((img_s, cpu_ms))
            print("round {} {:<12} {:8.1f} img/s  {:6.2f} CPU ms/img".format(round_index, name, img_s, cpu_ms))
    shares, seconds = stage_shares(train_dir, min(256, 4 * args.batch_size), args.batch_size, args.jitter)
    print("ours, one process: {:.2f} CPU ms/img; shares: {}".format(
        seconds * 1000, ", ".join("{} {:.0%}".format(k, v) for k, v in shares.items())))
    ratios = [o[0] / t[0] for o, t in zip(ours, theirs)]
    cpu_ratios = [t[1] / o[1] for o, t in zip(ours, theirs) if o[1] > 0]
    result = {
        "ours_img_s": round(statistics.median(o[0] for o in ours), 1),
        "torchvision_img_s": round(statistics.median(t[0] for t in theirs), 1),
        "ratio": round(statistics.median(ratios), 2),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "rounds": args.rounds,
        "ours_cpu_ms_per_img": round(statistics.median(o[1] for o in ours), 2),
        "torchvision_cpu_ms_per_img": round(statistics.median(t[1] for t in theirs), 2),
        "ratio_per_cpu_second": round(statistics.median(cpu_ratios), 2) if cpu_ratios else None,
        "shares": shares,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
