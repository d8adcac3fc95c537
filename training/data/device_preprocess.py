"""The device side of augmentation: uint8 batches turned into normalized floats on the device, with the colour
jitter (brightness, contrast, saturation in a random order per image) drawn per batch from a generator of its own."""
import torch

from training.data.decode import MEAN, STD
from training.errors import UserError

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # the colour jitter's operations, torchvision's semantics


def sample_jitter(batch, strength, generator=None):
    """Per-image factors `[B, 3]` (brightness, contrast, saturation) uniform in [max(0, 1-s), 1+s] and a random
    order `[B, 3]` (a permutation of 0, 1, 2 per image), drawn on the CPU so results do not depend on the device."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    factors = torch.rand(batch, 3, generator=generator) * (high - low) + low
    order = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)
    return factors, order


_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


_GRAY_CACHE = {}


def _gray_weights(device, dtype):
    """The grayscale weights on `device`, made once per device: a new small tensor per batch is a blocking copy."""
    key = (str(device), dtype)
    if key not in _GRAY_CACHE:
        _GRAY_CACHE[key] = torch.tensor(_GRAY, dtype=dtype).to(device)
    return _GRAY_CACHE[key]


def color_jitter_(images, factors, order, bound=1.0):
    """Brightness, contrast and saturation in place on float images `[B, 3, H, W]` with values in [0, bound].

    torchvision blends `(f * img + (1 - f) * other).clamp(0, bound)` with `other` = 0 (brightness), the mean of
    the grayscale image (contrast) or the grayscale image (saturation). All three are `f * img + t` with
    `t` = s * gray + c * mean, so each of the three steps costs one grayscale plane and a few batched passes,
    whichever adjustment each image does at that step: a handful of kernels for the whole batch (accelerators).
    The blend is linear, so `bound=255` on 0..255 images gives 255 times the result on 0..1 images.
    """
    batch = images.shape[0]
    device, dtype = images.device, images.dtype
    factors = factors.to(device=device, dtype=dtype)
    order = order.to(device)
    flat = images.view(batch, 3, -1)
    weights = _gray_weights(device, dtype).view(1, 1, 3).expand(batch, 1, 3).contiguous()
    zero = torch.zeros((), device=device, dtype=dtype)
    for step in range(3):
        op = order[:, step]
        factor = factors.gather(1, op.unsqueeze(1)).unsqueeze(2)  # [B, 1, 1]
        rest = 1.0 - factor
        contrast = torch.where((op == CONTRAST).view(-1, 1, 1), rest, zero)
        saturation = torch.where((op == SATURATION).view(-1, 1, 1), rest, zero)
        gray = torch.bmm(weights, flat)  # [B, 1, HW]
        mean = gray.mean(dim=2, keepdim=True)
        gray.mul_(saturation).add_(contrast * mean)
        flat.mul_(factor).add_(gray).clamp_(0.0, bound)
    return images


def color_jitter_one_(image, factors, order, bound=1.0):
    """The same adjustments in place on one float image `[3, H, W]`; `factors` and `order` are Python lists.

    For the CPU: one image stays in the cache through all passes and each adjustment does only its own work
    (brightness needs no grayscale plane, contrast only channel means), about half the memory traffic of the
    batched form, which a CPU pays for while an accelerator does not.
    """
    flat = image.view(3, -1)
    weights = _gray_weights(image.device, image.dtype)
    for op in order:
        factor = factors[op]
        if op == BRIGHTNESS:
            flat.mul_(factor)
        elif op == CONTRAST:
            mean = float(torch.dot(weights, flat.mean(dim=1)))
            flat.mul_(factor).add_((1.0 - factor) * mean)
        else:
            gray = torch.matmul(weights, flat)
            flat.mul_(factor).add_(gray.unsqueeze(0), alpha=1.0 - factor)
        if factor > 1.0:  # a factor <= 1 blends between values in [0, bound]: the clamp would change nothing
            flat.clamp_(0.0, bound)
    return image


# ----------------------------------------------------------------------------------------------------------
# Device side: uint8 batch -> normalized float with colour jitter (DevicePreprocess)


def upload_jitter(factors, order, device):
    """Factors `[B, 3]` and order `[B, 3]` to the device in one pinned, non-blocking copy: a plain copy from pageable
    memory would make the host wait for the accelerator on every training step."""
    packed = torch.cat([factors, order.to(factors.dtype)], dim=1)
    try:
        packed = packed.pin_memory()
    except RuntimeError:  # no pinned memory on this machine/backend: the copy blocks, the values are the same
        pass
    packed = packed.to(device, non_blocking=True)
    return packed[:, :3], packed[:, 3:].long()


class DevicePreprocess:
    """uint8 batch on the device -> normalized float32, with per-image colour jitter when training.

    Works in the 0..255 scale (mean/std of ImageNet times 255), so uint8 -> float needs no division.
    `jitter` is the ColorJitter strength for brightness, contrast and saturation (0.2 ModelZoo, 0.4 paper
    recipe). The jitter factors come from this object's own CPU generator, reseeded from `(seed, epoch)` by
    `set_epoch` (call it at each epoch start, next to the sampler's): a resumed run draws exactly the factors of
    an uninterrupted one, whatever the loader (workers, iterator creation) does with the global RNG.
    `generator` replaces that generator (tests); `set_epoch` then reseeds it too.
    """

    def __init__(self, jitter=0.2, channels_last=False, generator=None, seed=0):
        if jitter < 0:
            raise UserError("colour jitter must be 0 or more, got {}".format(jitter))
        self.jitter = float(jitter)
        self.channels_last = channels_last
        self.seed = int(seed)
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.set_epoch(0)
        self._stats = {}

    def set_epoch(self, epoch):
        """Reseed the jitter generator from (seed, epoch): the factors of epoch e do not depend on earlier epochs."""
        self.generator.manual_seed((self.seed * 1000003 + int(epoch) * 7919 + 1) % (1 << 63))

    def _mean_std(self, device):
        key = str(device)
        if key not in self._stats:
            mean = torch.tensor([255.0 * m for m in MEAN], device=device).view(1, 3, 1, 1)
            inv_std = torch.tensor([1.0 / (255.0 * s) for s in STD], device=device).view(1, 3, 1, 1)
            self._stats[key] = (mean, inv_std)
        return self._stats[key]

    def __call__(self, images, train):
        jitter = train and self.jitter > 0
        if jitter:
            factors, order = sample_jitter(images.shape[0], self.jitter, self.generator)
        mean, inv_std = self._mean_std(images.device)
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        if images.device.type == "cpu":
            # One image at a time stays in the cache: about twice as fast as whole-batch passes on a CPU.
            factor_rows = factors.tolist() if jitter else None
            order_rows = order.tolist() if jitter else None
            mean, inv_std = mean[0], inv_std[0]  # [3, 1, 1]: broadcast over one image
            for i in range(images.shape[0]):
                image = out[i]
                image.copy_(images[i])
                if jitter:
                    color_jitter_one_(image, factor_rows[i], order_rows[i], bound=255.0)
                image.sub_(mean).mul_(inv_std)
        else:
            out.copy_(images)
            if jitter:
                factors, order = upload_jitter(factors, order, images.device)
                color_jitter_(out, factors, order, bound=255.0)
            out.sub_(mean).mul_(inv_std)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
