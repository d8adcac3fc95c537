"""A run's inputs, from main.py's flags: this rank's loaders (or synthetic batches with --dummy), the device-side
preprocessing, the per-epoch reseeding and the number of steps per epoch.

"""
import math

from training.data import dali, loaders
from training.data.device_preprocess import DevicePreprocess
from training.errors import UserError
from training.launch import modelzoo

# --dummy without --steps-per-epoch: enough steps for a steady images/s after the 10 left out of it (engine.py),
# few enough for a first look (an ImageNet-sized synthetic epoch is 160,000 steps at batch 8)
DUMMY_STEPS_PER_EPOCH = 100


class Data:
    """This rank's loaders and what comes with them."""

    def __init__(self, *, train, sampler, val, num_classes, classes, preprocess, train_images):
        self.train, self.sampler, self.val = train, sampler, val
        self.num_classes, self.classes, self.preprocess = num_classes, classes, preprocess
        self.train_images = train_images  # in the whole training set (all ranks)


def build(args, ctx, device):
    """Loaders of this rank's share (synthetic with --dummy) and the device-side preprocessing."""
    per_rank = args.batch_size // ctx.world_size
    # the colour jitter draws from its own generator, keyed by (seed + rank, epoch): exact resume with any --workers
    preprocess = DevicePreprocess(jitter=args.color_jitter, channels_last=args.channels_last, seed=args.seed + ctx.rank)
    if args.dummy:
        num_classes = args.num_classes or 1000
        steps = args.steps_per_epoch or DUMMY_STEPS_PER_EPOCH
        train = loaders.SyntheticLoader(per_rank, args.train_crop_size, num_classes, device, steps)
        val = loaders.SyntheticLoader(per_rank, args.val_crop_size, num_classes, device, max(1, min(10, steps)))
        return Data(train=train, sampler=None, val=val, num_classes=num_classes, classes=None, preprocess=preprocess,
                    train_images=steps * args.batch_size)
    train_dir, val_dir = loaders.check_data_root(args.data)
    shared = {"world_size": ctx.world_size, "rank": ctx.rank, "strict": args.strict_data}
    if args.data_backend == "dali":  # decoding on the device (the CPU in tests): same samplers, boxes and batches
        backend = dali
        shared["device"] = device
    else:
        backend = loaders
        shared["pin_memory"] = device.type != "cpu"
    train, sampler = backend.build_train_loader(train_dir, per_rank, args.workers, crop_size=args.train_crop_size,
                                                seed=args.seed, scale=args.train_crop_scale, **shared)
    val = backend.build_val_loader(val_dir, per_rank, args.workers, resize_size=args.val_resize_size,
                                   crop_size=args.val_crop_size, **shared)
    classes = list(train.dataset.classes)
    if args.num_classes is not None and args.num_classes < len(classes):
        raise UserError("--num-classes {} is smaller than the {} class folders in {}".format(
            args.num_classes, len(classes), train_dir))
    return Data(train=train, sampler=sampler, val=val, num_classes=args.num_classes or len(classes),
                classes=classes, preprocess=preprocess, train_images=len(train.dataset))


def steps_per_epoch(args, batches, world_size, *, images):
    """Iterations per epoch: the loader's full batches, capped by --steps-per-epoch; none is a one-line error that
    says how many `images` (the whole training set) each process got, in the spelling of the user's command
    (a launcher's --batch_size, else main.py's --batch-size)."""
    steps = min(batches, args.steps_per_epoch or batches)
    if steps == 0:
        flag = "{}={}".format(modelzoo.user_spelling("batch_size", "--batch-size"), args.batch_size)
        if world_size == 1:
            raise UserError("the training set has {} images, fewer than one batch ({}): lower it".format(
                images, flag))
        raise UserError("the training set has {} images, {} per process, fewer than one batch per process ({}: "
                        "{} over {} processes): lower it".format(images, math.ceil(images / world_size),
                                                                args.batch_size // world_size, flag, world_size))
    return steps


def set_epoch(data, epoch):
    """Reseed what draws per epoch: the sampler's shuffle and the device-side colour jitter."""
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    data.preprocess.set_epoch(epoch)
