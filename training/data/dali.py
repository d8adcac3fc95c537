"""The DALI input path (`--data-backend dali`): JPEGs decoded on the GPU, only the region the crop needs.

What stays ours: the image folders, the samplers (TrainSampler's per-epoch order and per-sample seeds, ShardSampler's
every-val-image-once shards), the crop boxes (decode.random_box / decode.center_crop_box drawn from each sample's
seed, in the CPU loader's order) and the replacement of unreadable files (loaders.ImageFolderData). The main
process reads each file and its header size, draws the box and the flip, and feeds bytes, decode window, resize
region and flip through DALI's external source; DALI decodes the window (`fn.decoders.image_slice`: ROI decoding,
the GPU's hardware JPEG decoder where present with device "mixed"), resizes the region to the output size
(`fn.resize`, bilinear with antialiasing, as Pillow) and flips it (`fn.flip`). Batches are the CPU loader's:
`(uint8 [B, 3, H, W] channels-last view, int64 [B], bad count)`, then DevicePreprocess (normalize, colour jitter)
as on the CPU path. So shards, seeds and exact resume do not depend on the backend, and the CPU pipeline (device
"cpu", the same graph) is what the tests run.

Not decoded by DALI: formats outside its list (GIF, ...): such files count as unreadable (replaced by another
sample with a warning, or an error with --strict-data). A file whose header reads but whose data DALI's decoder
refuses stops the run with one error line naming it; `--data-backend cpu` replaces such files.
"""
import collections
import io
import math
import re

import numpy as np
import torch
from PIL import Image

from training.data import decode, loaders
from training.errors import UserError

DEVICES = {"cuda": "mixed", "cpu": "cpu"}  # the run's device type -> DALI's decoder device
FORMATS = ("JPEG", "JPEG2000", "TIFF", "PNG", "BMP", "PPM", "WEBP")  # Pillow's names of what DALI decodes
INPUTS = ("encoded", "window_start", "window_shape", "roi_start", "roi_end", "flip")  # one plan, in this order
PREFETCH_BATCHES = 2  # batches DALI decodes ahead of the one the training step takes


def install_command():
    """The pip command of the DALI wheel for this torch's CUDA: DALI 2 ships wheels for CUDA 12 and 13 (13 when torch
    has no CUDA: its CPU pipelines run anywhere)."""
    cuda = torch.version.cuda
    major = int(cuda.split(".")[0]) if cuda else 13
    if major < 12:
        return "pip install nvidia-dali-cuda120 (DALI 2 needs CUDA >= 12; this torch is built for CUDA {})".format(cuda)
    return "pip install nvidia-dali-cuda{}0".format(min(major, 13))


def import_dali():
    """`(Pipeline, fn, types, feed_ndarray)` of nvidia.dali; UserError with the install command without it."""
    try:
        from nvidia.dali import Pipeline, fn, types
        from nvidia.dali.plugin.pytorch import feed_ndarray
    except Exception as exc:  # ImportError, or a wheel for another CUDA / Python (OSError, RuntimeError, ...)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError("--data-backend dali needs NVIDIA DALI ({}): {}".format(
            reason[:200], install_command())) from None
    return Pipeline, fn, types, feed_ndarray


def check_available(device_type):
    """UserError (one line) unless DALI imports and runs on this device type: cuda (GPU decoding) or cpu."""
    if device_type not in DEVICES:
        raise UserError("--data-backend dali runs on cuda (GPU decoding) or cpu, not {}: use --data-backend cpu"
                        .format(device_type))
    import_dali()


# ----------------------------------------------------------------------------------------------------------
# Host side: file bytes, header size, crop box and flip of one sample (a "plan")


def image_size(raw):
    """`(width, height)` from the header of an image DALI decodes; ValueError for other files."""
    modules = decode.fast_modules()
    size = decode.jpeg_size(raw, modules[0]) if modules is not None else None
    if size is not None:
        return size
    with Image.open(io.BytesIO(raw)) as image:  # reads the header only
        if image.format not in FORMATS:
            raise ValueError("{} files are not decoded by DALI".format(image.format or "these"))
        return image.size


def decode_window(box, width, height, out_size):
    """Where DALI decodes and what it resizes: `(start [x, y], shape [w, h])` of the decoded window (ints: the box
    and the pixels the resize filter reads around it, inside the image) and `(roi_start [y, x], roi_end [y, x])`,
    the box in window pixels (floats)."""
    left, top, right, bottom = box
    reach = int(math.ceil(max(right - left, bottom - top) / float(out_size))) + 1
    x0, y0 = max(0, int(math.floor(left)) - reach), max(0, int(math.floor(top)) - reach)
    x1, y1 = min(width, int(math.ceil(right)) + reach), min(height, int(math.ceil(bottom)) + reach)
    return (x0, y0), (x1 - x0, y1 - y0), (top - y0, left - x0), (bottom - y0, right - x0)


class EncodedImageFolder(loaders.ImageFolderData):
    """ImageFolderData whose items carry a plan instead of pixels: the path, then `(file bytes, window start, window
    shape, ROI start, ROI end, flip)` as numpy arrays (INPUTS order), with the same seeds and replacements of bad
    files."""

    def load(self, path, rng):
        flip = decode.draw_flip(rng) if self.train else False
        with open(path, "rb") as handle:
            raw = handle.read()
        width, height = image_size(raw)
        if self.train:
            box = decode.random_box(width, height, rng, scale=self.scale)
        else:
            box = decode.center_crop_box(width, height, self.resize_size, self.crop_size)
        start, shape, roi_start, roi_end = decode_window(box, width, height, self.crop_size)
        return (path, np.frombuffer(raw, dtype=np.uint8), np.array(start, dtype=np.int32),
                np.array(shape, dtype=np.int32), np.array(roi_start, dtype=np.float32),
                np.array(roi_end, dtype=np.float32), np.array(int(flip), dtype=np.int32))


# ----------------------------------------------------------------------------------------------------------
# DALI side: one pipeline per loader, fed batch by batch


class DecodePipeline:
    """A DALI pipeline from plans to uint8 `[B, out_size, out_size, 3]` batches on `device` (the run's device:
    decoder device "mixed" on cuda, "cpu" on the CPU). `schedule(plans)` feeds one batch and starts it;
    `collect(paths)` returns the oldest started batch (first in, first out)."""

    def __init__(self, batch_size, out_size, threads, device):
        pipeline_class, self.fn, self.types, self.feed_ndarray = import_dali()
        if device.type not in DEVICES:
            raise UserError("--data-backend dali runs on cuda or cpu, not {}".format(device.type))
        self.device = device
        device_id = (device.index or 0) if device.type == "cuda" else None
        # depth 1: each schedule_run starts exactly one fed batch, so this class alone decides how many are ahead
        self.pipe = pipeline_class(batch_size=batch_size, num_threads=max(1, threads), device_id=device_id,
                                   prefetch_queue_depth=1, seed=0)
        with self.pipe:
            self.pipe.set_outputs(self._graph(out_size, DEVICES[device.type]))
        self.pipe.build()
        self.started = 0

    def _graph(self, out_size, decoder_device):
        fn, types = self.fn, self.types
        kinds = {"encoded": (types.UINT8, 1), "window_start": (types.INT32, 1), "window_shape": (types.INT32, 1),
                 "roi_start": (types.FLOAT, 1), "roi_end": (types.FLOAT, 1), "flip": (types.INT32, 0)}
        nodes = {name: fn.external_source(name=name, dtype=kinds[name][0], ndim=kinds[name][1]) for name in INPUTS}
        images = fn.decoders.image_slice(nodes["encoded"], device=decoder_device, output_type=types.RGB,
                                         start=nodes["window_start"], shape=nodes["window_shape"],
                                         adjust_orientation=False,  # as Pillow and simplejpeg: pixels as stored
                                         jpeg_fancy_upsampling=True)  # the GPU's chroma upsampling = the CPU's
        images = fn.resize(images, size=[out_size, out_size], roi_start=nodes["roi_start"], roi_end=nodes["roi_end"],
                           interp_type=types.INTERP_LINEAR, antialias=True)
        return fn.flip(images, horizontal=nodes["flip"], vertical=0)

    def schedule(self, plans):
        columns = list(zip(*plans))[1:]  # the path stays here
        for name, column in zip(INPUTS, columns):
            self.pipe.feed_input(name, list(column))
        self.pipe.schedule_run()
        self.started += 1

    def _outputs(self, stream, paths=()):
        try:
            outputs = self.pipe.outputs(cuda_stream=stream)
        except Exception as exc:  # a failed decode of any sample is an error of the whole batch (and pipeline)
            raise UserError(decode_failure(str(exc), paths)) from None
        finally:
            self.started -= 1
        return outputs[0].as_tensor()

    def collect(self, paths=()):
        """The oldest started batch as a uint8 `[B, H, W, 3]` tensor on the device (`paths`: its files, named in
        the error when one does not decode)."""
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        batch = self._outputs(stream, paths)
        images = torch.empty(batch.shape(), dtype=torch.uint8, device=self.device)
        self.feed_ndarray(batch, images, cuda_stream=stream)
        return images

    def drain(self):
        """Drop the batches still in flight (an epoch cut short by --steps-per-epoch leaves some)."""
        while self.started > 0:
            self._outputs(None)


def decode_failure(message, paths):
    """One line for DALI's error `message`: the file it names by its place in the batch (`paths`) and its reason."""
    found = re.search(r"sample #(\d+)", message)
    index = int(found.group(1)) if found else -1
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = next((line for line in lines if "sample #" in line), lines[0] if lines else "no message")
    what = paths[index] if 0 <= index < len(paths) else "a batch"
    return "DALI could not decode {} ({}); --data-backend cpu replaces unreadable files".format(
        what, reason.rstrip(" :")[:200])


class DaliBatches:
    """The DataLoader of the DALI path: the sampler's keys in batches of `batch_size`, each planned in this process,
    decoded by the pipeline; yields `(images, targets, bad (path, reason) list, error or None)` as loaders.collate
    does, so loaders.BatchLoader turns it into a run's loader."""

    def __init__(self, dataset, sampler, batch_size, pipeline, drop_last):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.pipeline, self.drop_last = pipeline, drop_last

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def _batches(self):
        keys = list(self.sampler)
        batches = [keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        return batches[:len(self)]

    def _start(self, keys):
        """Plan one batch and start its decoding; returns `(targets, bad, error, paths)` (nothing started on an
        error)."""
        items = [self.dataset[key] for key in keys]
        bad = [entry for item in items for entry in item[2]]
        errors = [item[3] for item in items if item[3]]
        if errors:
            return None, bad, errors[0], None
        self.pipeline.schedule([item[0] for item in items])
        targets = torch.tensor([item[1] for item in items], dtype=torch.int64)
        if self.pipeline.device.type == "cuda":  # a copy from pageable memory would wait for the GPU's queue
            targets = targets.pin_memory()
        return targets, bad, None, [item[0][0] for item in items]

    def _finish(self, started):
        targets, bad, error, paths = started
        if error:
            return None, None, bad, error
        return self.pipeline.collect(paths).permute(0, 3, 1, 2), targets, bad, None

    def __iter__(self):
        self.pipeline.drain()
        ahead = collections.deque()
        for keys in self._batches():
            ahead.append(self._start(keys))
            if len(ahead) > PREFETCH_BATCHES:
                yield self._finish(ahead.popleft())
        while ahead:
            yield self._finish(ahead.popleft())


def build_train_loader(root, batch_size, workers, *, device, crop_size=224, **options):
    """`(loader, sampler)` for train/ like loaders.build_train_loader (`options`: loaders.train_set's); `workers`
    is DALI's thread count."""
    dataset, sampler = loaders.train_set(root, batch_size, workers, crop_size=crop_size,
                                         dataset_class=EncodedImageFolder, **options)
    pipeline = DecodePipeline(batch_size, crop_size, workers, device)
    return loaders.BatchLoader(DaliBatches(dataset, sampler, batch_size, pipeline, drop_last=True)), sampler


def build_val_loader(root, batch_size, workers, *, device, crop_size=224, **options):
    """Loader for val/ like loaders.build_val_loader (`options`: loaders.val_set's)."""
    dataset, sampler = loaders.val_set(root, batch_size, workers, crop_size=crop_size,
                                       dataset_class=EncodedImageFolder, **options)
    pipeline = DecodePipeline(batch_size, crop_size, workers, device)
    return loaders.BatchLoader(DaliBatches(dataset, sampler, batch_size, pipeline, drop_last=False))
