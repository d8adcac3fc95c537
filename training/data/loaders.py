"""Image folders, samplers, uint8 batch loaders and synthetic data.

Loaders yield `(images, targets, bad)`: uint8 `[B, 3, H, W]` (channels-last memory), int64 `[B]`, and the number
of unreadable files replaced by other samples in this batch. Workers only decode, crop, resize and flip
(training/data/decode.py); float conversion, colour jitter and normalization happen on the device
(training/data/device_preprocess.py: batched on an
accelerator, image by image in the main process on the CPU), which keeps the per-image CPU cost low and the
bytes moved four times smaller than float batches.

Randomness: the sampler (main process) draws a seed for every sample from (seed, epoch, position), so the
augmentation of a sample does not depend on the number of workers, and runs repeat exactly for a fixed seed.
The colour jitter factors come from DevicePreprocess's own (seed, epoch) generator.

Sizes, batch sizes and crop scales arrive checked: main.py's flags declare their ranges (training/options.py) and
each tool checks its own; this module checks what only the data can tell (folders, images, enough samples).
"""
import logging
import os
import random
import signal
import stat
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from training import compat
from training.data import decode
from training.errors import UserError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif")
MAX_REPLACEMENTS = 10  # unreadable files tried in a row for one sample before giving up

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Folders


def _is_image(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def _class_folders(root):
    """Sorted names of the visible sub-folders of root (the classes)."""
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise UserError("cannot read data folder {}: {}".format(root, exc.strerror or exc)) from None
    return sorted(n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))


def _walk_once(folder, others=()):
    """os.walk that follows symlinked folders but reads each real folder once: a folder already read, an
    ancestor of `folder` (a link to `..` or a loop) and the real folders in `others` (the other classes) are
    not entered. Yields `(dirpath, sorted filenames)`."""
    top = os.path.realpath(folder)
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        inside = real == top or not (top + os.sep).startswith(real.rstrip(os.sep) + os.sep)
        if real in seen or real in others or not inside:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        yield dirpath, sorted(filenames)


def _is_regular_file(path):
    """True for a regular file (or a link to one): FIFOs, sockets and devices would block or mislead a reader."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # a dangling link: listed, so that the loader names it as unreadable
        return True


def list_images(folder, counts=None, others=()):
    """(sorted image paths under folder, recursively; number of visible non-image files skipped). Also used by
    tools/demo.py to expand a folder argument. Each real folder is read once (`others`: real folders not to
    enter, e.g. the other classes); entries with an image extension
    that are not regular files (FIFOs, sockets, devices) are skipped and counted in `counts["special"]`."""
    paths, skipped = [], 0
    for dirpath, filenames in _walk_once(folder, others):
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not _is_image(name):
                skipped += 1
            elif _is_regular_file(path):
                paths.append(path)
            elif counts is not None:
                counts["special"] = counts.get("special", 0) + 1
            else:
                skipped += 1
    return paths, skipped


def _has_image(folder):
    """True as soon as one image file is found (cheap on ImageNet-sized folders)."""
    for dirpath, filenames in _walk_once(folder):
        if any(_is_image(n) and not n.startswith(".") and _is_regular_file(os.path.join(dirpath, n))
               for n in filenames):
            return True
    return False


def list_classes(root):
    """Sorted class folder names of an ImageFolder root; UserError when it is missing or has none."""
    if not os.path.isdir(root):
        raise UserError("data folder not found: {}".format(root))
    classes = _class_folders(root)
    if not classes:
        raise UserError("no class folders in {} (expected {}/<class>/<image>)".format(root, root.rstrip("/")))
    return classes


def scan_folder(root):
    """`(samples, classes)`: samples are (path, class index) in sorted order; UserError for an empty class."""
    classes = list_classes(root)
    samples, skipped, counts = [], 0, {}
    real_folders = set(os.path.realpath(os.path.join(root, name)) for name in classes)
    real_folders.add(os.path.realpath(root))
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        others = real_folders - {os.path.realpath(folder)}
        paths, skipped_here = list_images(folder, counts, others)
        if not paths:
            raise UserError("empty class folder (no {} files): {}".format(
                "/".join(e[1:] for e in IMG_EXTENSIONS[:3]), os.path.join(root, name)))
        samples.extend((path, index) for path in paths)
        skipped += skipped_here
    if skipped:
        logger.warning("warning: skipped %d files without an image extension under %s", skipped, root)
    if counts.get("special"):
        logger.warning("warning: skipped %d entries under %s that are not regular files (FIFOs, sockets, devices)",
                       counts["special"], root)
    return samples, classes


def num_classes(train_dir):
    """Number of class folders in the train folder."""
    return len(list_classes(train_dir))


def check_data_root(path):
    """`(train_dir, val_dir)` of an ImageNet-style root, or UserError naming what is missing.

    Checks the folders, that every class folder holds an image, and that val/ has the same classes as
    train/ (the targets are class indices, so a missing val class would silently shift every label).
    """
    if not path or not os.path.isdir(path):
        raise UserError("data folder not found: {}".format(path))
    train_dir, val_dir = os.path.join(path, "train"), os.path.join(path, "val")
    for split in (train_dir, val_dir):
        if not os.path.isdir(split):
            raise UserError("no {}/ folder in {}".format(os.path.basename(split), path))
    train_classes = list_classes(train_dir)
    val_classes = list_classes(val_dir)
    if train_classes != val_classes:
        missing = sorted(set(train_classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train_classes))
        raise UserError("val/ classes differ from train/ classes: {} missing in val/, {} not in train/ (e.g. {})"
                        .format(len(missing), len(extra), (missing + extra)[0]))
    for split, classes in ((train_dir, train_classes), (val_dir, val_classes)):
        for name in classes:
            if not _has_image(os.path.join(split, name)):
                raise UserError("empty class folder (no image files): {}".format(os.path.join(split, name)))
    return train_dir, val_dir


# ----------------------------------------------------------------------------------------------------------
# Data set: one sample = decode + crop + resize (+ flip), with replacement of unreadable files


class ImageFolderData(Dataset):
    """Image folder whose items are keyed by `(index, sample_seed)` (what the samplers below yield).

    An item is `(uint8 HWC array, target, bad, error)`: `bad` lists `(path, reason)` of unreadable files that
    were replaced by random other samples, `error` is a message when `strict` (or when nothing readable was
    found); the loader turns both into a warning or a UserError in the main process.
    """

    def __init__(self, root, train, crop_size=224, resize_size=256, strict=False, scale=decode.SCALE):
        self.root = root
        self.scale = tuple(scale)
        self.samples, self.classes = scan_folder(root)
        self.train = train
        self.crop_size = crop_size
        self.resize_size = resize_size
        self.strict = strict

    def __len__(self):
        return len(self.samples)

    def load(self, path, rng):
        if self.train:
            return decode.train_image(path, self.crop_size, rng, scale=self.scale)
        return decode.val_image(path, self.resize_size, self.crop_size)

    def __getitem__(self, key):
        index, sample_seed = key if isinstance(key, tuple) else (key, key)  # a plain index: seed = index
        rng = random.Random(sample_seed)
        bad = []
        for _ in range(MAX_REPLACEMENTS + 1):
            path, target = self.samples[index]
            try:
                return self.load(path, rng), target, bad, None
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad files
                reason = _one_line(exc, path)
                if self.strict:
                    return None, target, bad, "unreadable image {}: {}".format(path, reason)
                bad.append((path, reason))
                index = rng.randrange(len(self.samples))
        return None, target, bad, "more than {} unreadable images in a row, last {}: {}".format(
            MAX_REPLACEMENTS, path, reason)


def _one_line(exc, path=None):
    """The exception as one short line, without the path (the messages name it once themselves)."""
    text = str(exc)
    if path:
        text = text.replace(repr(path), "").replace(path, "").rstrip(" :")
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def collate(items):
    """Stack samples into `(uint8 [B, 3, H, W], int64 [B], bad (path, reason) list, first error or None)`.

    The images keep the samples' HWC layout (a channels-last [B, 3, H, W] view): one plain copy per image here,
    the layout change happens in DevicePreprocess's float conversion on the device.
    """
    errors = [item[3] for item in items if item[3]]
    bad = [entry for item in items for entry in item[2]]
    if errors:
        return None, None, bad, errors[0]
    array = np.empty((len(items),) + items[0][0].shape, dtype=np.uint8)
    for i, item in enumerate(items):
        array[i] = item[0]
    images = torch.from_numpy(array).permute(0, 3, 1, 2)
    targets = torch.tensor([item[1] for item in items], dtype=torch.int64)
    return images, targets, bad, None


# ----------------------------------------------------------------------------------------------------------
# Samplers (main process): which samples a rank reads, and each sample's seed


class TrainSampler(Sampler):
    """A shuffled shard for one rank, padded like DistributedSampler; yields `(index, sample_seed)`.

    Permutation and seeds come from a generator seeded by (seed, epoch), so position p of epoch e gets the
    same image and the same augmentation whatever the number of workers.
    """

    def __init__(self, size, world_size=1, rank=0, seed=0):
        self.size, self.world_size, self.rank, self.seed = size, world_size, rank, seed
        self.num_samples = -(-size // world_size)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1000003 + self.epoch) % (1 << 63))
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self.num_samples * self.world_size
        while len(order) < total:
            order += order[:total - len(order)]
        seeds = torch.randint(0, 1 << 62, (total,), generator=generator).tolist()
        return iter(list(zip(order[self.rank::self.world_size], seeds[self.rank::self.world_size])))


class ShardSampler(Sampler):
    """Validation shard: rank r reads samples r, r + world, ... (each image exactly once over all ranks)."""

    def __init__(self, size, world_size=1, rank=0):
        self.indices = list(range(rank, size, world_size))

    def set_epoch(self, epoch):
        """Nothing to do: validation order and decoding are fixed."""

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return ((index, index) for index in self.indices)


# ----------------------------------------------------------------------------------------------------------
# Loaders


class BatchLoader:
    """A DataLoader that yields `(images, targets, bad)` and reports unreadable files from the main process.

    Workers cannot raise UserError usefully (DataLoader re-raises with the worker traceback in the message),
    so they return the message and this wrapper raises it here, and logs each bad file's warning once.
    """

    def __init__(self, loader):
        self.loader = loader
        self.dataset = loader.dataset
        self.sampler = loader.sampler
        self.batch_size = loader.batch_size
        self._warned = set()

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        error = None
        for images, targets, bad, error in self.loader:
            for path, reason in bad:
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("warning: unreadable image %s (%s), another sample used instead", path, reason)
            if error:
                break  # raise after leaving the DataLoader loop
            yield images, targets, len(bad)
        if error:
            raise UserError(error)


def _data_loader(dataset, sampler, batch_size, workers, pin_memory, drop_last):
    decode.warn_if_no_fast_decode()
    decode.init_worker()  # workers=0 decodes here: one OpenCV thread in this process too
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=pin_memory, drop_last=drop_last,
                        worker_init_fn=IgnoreInterrupts(decode.init_worker) if workers else None,
                        **compat.loader_worker_options(workers))
    return BatchLoader(loader)


def train_set(root, batch_size, workers, *, crop_size=224, world_size=1, rank=0, seed=0, strict=False,
              scale=decode.SCALE, dataset_class=ImageFolderData):
    """`(dataset, sampler)` of train/ after the checks of every train loader (the CPU one below, the DALI one):
    RandomResizedCrop (area fraction in `scale`) + flip, a TrainSampler shard; `dataset_class` makes the items."""
    dataset = dataset_class(root, train=True, crop_size=crop_size, strict=strict, scale=scale)
    sampler = TrainSampler(len(dataset), world_size, rank, seed)
    if len(sampler) < batch_size:
        raise UserError("{} has {} images: fewer than one batch of {} per rank ({} ranks)".format(
            root, len(dataset), batch_size, world_size))
    return dataset, sampler


def val_set(root, batch_size, workers, *, resize_size=256, crop_size=224, world_size=1, rank=0, strict=False,
            dataset_class=ImageFolderData):
    """`(dataset, sampler)` of val/ after the checks of every val loader: Resize + CenterCrop, a ShardSampler."""
    dataset = dataset_class(root, train=False, crop_size=crop_size, resize_size=resize_size, strict=strict)
    return dataset, ShardSampler(len(dataset), world_size, rank)


def build_train_loader(root, batch_size, workers, *, pin_memory=False, **options):
    """`(loader, sampler)` for train/ (`options`: train_set's): decode, crop and flip in workers, drop_last,
    `sampler.set_epoch(e)`."""
    dataset, sampler = train_set(root, batch_size, workers, **options)
    return _data_loader(dataset, sampler, batch_size, workers, pin_memory, drop_last=True), sampler


def build_val_loader(root, batch_size, workers, *, pin_memory=False, **options):
    """Loader for val/ (`options`: val_set's): Resize + CenterCrop, rank r gets samples r, r + world, ... (every
    image once)."""
    dataset, sampler = val_set(root, batch_size, workers, **options)
    return _data_loader(dataset, sampler, batch_size, workers, pin_memory, drop_last=False)


def load_val_image(path, resize_size=256, crop_size=224):
    """One image decoded exactly as in validation: uint8 `[3, crop, crop]` (for tools: predict, export checks)."""
    decode.warn_if_no_fast_decode()
    try:
        image = decode.val_image(path, resize_size, crop_size)
    except FileNotFoundError:
        raise UserError("image not found: {}".format(path)) from None
    except Exception as exc:
        raise UserError("unreadable image {}: {}".format(path, _one_line(exc, path))) from None
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class SyntheticLoader:
    """`--dummy`: `steps` uint8 batches made once on the device, random targets; measures the model alone."""

    def __init__(self, batch_size, crop_size, num_classes, device, steps):
        self.steps = steps
        generator = torch.Generator()
        generator.manual_seed(0)
        images = torch.randint(0, 256, (batch_size, 3, crop_size, crop_size), generator=generator, dtype=torch.uint8)
        targets = torch.randint(0, num_classes, (batch_size,), generator=generator, dtype=torch.int64)
        self.images, self.targets = images.to(device), targets.to(device)
        self.batch_size = batch_size

    def set_epoch(self, epoch):
        """Same batches every epoch."""

    def __len__(self):
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.targets, 0


# ----------------------------------------------------------------------------------------------------------
# Data-loader workers leave Ctrl-C to their parent (a terminal's SIGINT reaches every process of the
# foreground group; a worker hit mid-decode would print a traceback after the parent's one clean line).
#
# A worker hands each batch's tensors over as shared-memory file descriptors: its multiprocessing resource_sharer
# thread serves them over a socket, and the parent connects to fetch them while it unpickles the batch. Ctrl-C that
# lands in the parent during such a fetch closes the parent's end mid-handshake; the worker, still alive (it ignores
# SIGINT and waits to be shut down), then reports a ConnectionResetError / BrokenPipeError / EOFError traceback from
# resource_sharer._serve through sys.excepthook. Nothing is lost there (the parent no longer wants that batch, and
# a parent that did want it raises itself), so the workers drop exactly those reports.

class IgnoreInterrupts:
    """A DataLoader `worker_init_fn` that sets SIGINT to SIG_IGN and, in a worker, quiets the handoffs its stopping
    parent cuts (CutHandoffsQuiet), then calls the loader's own init function (if any). A class rather than a
    closure, so it pickles for the spawn start method."""

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, worker_id):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if get_worker_info() is not None and not isinstance(sys.excepthook, CutHandoffsQuiet):
            sys.excepthook = CutHandoffsQuiet(sys.excepthook)
        if self.previous is not None:
            self.previous(worker_id)


class CutHandoffsQuiet:
    """A worker's sys.excepthook: drops the connection errors of resource_sharer's serving thread (a tensor handoff
    cut by the parent), passes everything else to `previous`."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, exc_type, exc, tb):
        if issubclass(exc_type, (ConnectionError, EOFError)) and _raised_in_resource_sharer(tb):
            return
        self.previous(exc_type, exc, tb)


def _raised_in_resource_sharer(tb):
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == "multiprocessing.resource_sharer":
            return True
        tb = tb.tb_next
    return False
