"""A checkpoint's content digest: SHA-256 over its tensors' bytes and its plain fields, stored in the checkpoint.

main.py's checkpoints carry it under DIGEST_KEY as the string "sha256:<64 hex digits>", so the file stays a dict of
tensors and plain values (torch.load(weights_only=True) and torchvision's loading of `state_dict` are unaffected).
Every load recomputes it: a file whose tensors or fields changed after it was written (a flipped bit on the disk, a
copy cut short and padded, an edit) no longer matches and is reported as damaged.

What is hashed, in a fixed order: every dict's keys, sorted; every list's and tuple's items, in order; for each
tensor its dtype, shape and the bytes of its elements in row-major order; for each other value its type and repr().
A CPU tensor's bytes are read where they lie (no copy); a tensor on a device, or not contiguous, is copied to a
contiguous CPU tensor one at a time, so the extra memory is at most the largest single tensor.
"""
import ctypes
import hashlib

import torch

DIGEST_KEY = "digest"
ALGORITHM = "sha256"


def compute(checkpoint):
    """"sha256:<hex>" of the dict `checkpoint` without its DIGEST_KEY entry."""
    hasher = hashlib.new(ALGORITHM)
    _feed(hasher, {key: value for key, value in checkpoint.items() if key != DIGEST_KEY})
    return "{}:{}".format(ALGORITHM, hasher.hexdigest())


def with_digest(checkpoint):
    """A copy of the dict `checkpoint` (the values are shared, not copied) with its digest added."""
    sealed = {key: value for key, value in checkpoint.items() if key != DIGEST_KEY}
    sealed[DIGEST_KEY] = compute(sealed)
    return sealed


def check(checkpoint):
    """"ok" when the dict's stored digest matches its contents, "missing" when it stores none (a file written
    before digests were added, or by another program), "mismatch" otherwise (also for a digest of the wrong form)."""
    stored = checkpoint.get(DIGEST_KEY)
    if stored is None:
        return "missing"
    if not isinstance(stored, str) or not stored.startswith(ALGORITHM + ":"):
        return "mismatch"
    return "ok" if compute(checkpoint) == stored else "mismatch"


def _feed(hasher, value):
    """Add `value` (dicts, lists, tuples, tensors, plain values, nested) to `hasher`, tagged by type."""
    if torch.is_tensor(value):
        _feed_tensor(hasher, value)
    elif isinstance(value, dict):
        keys = sorted(value, key=_sort_key)
        hasher.update("dict {}\n".format(len(keys)).encode("utf-8"))
        for key in keys:
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, (list, tuple)):
        hasher.update("{} {}\n".format(type(value).__name__, len(value)).encode("utf-8"))
        for item in value:
            _feed(hasher, item)
    else:
        text = "{} {!r}\n".format(type(value).__name__, value).encode("utf-8")
        hasher.update("{}\n".format(len(text)).encode("utf-8"))
        hasher.update(text)


def _sort_key(key):
    """Dict keys of mixed types (optimizer state: ints; everything else: strings) in one stable order."""
    return type(key).__name__, repr(key)


def _feed_tensor(hasher, tensor):
    hasher.update("tensor {} {}\n".format(tensor.dtype, list(tensor.shape)).encode("utf-8"))
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        tensor = tensor.detach().to("cpu").contiguous()
    size = tensor.numel() * tensor.element_size()
    if size:
        hasher.update(_bytes_in_place(tensor, size))


def _bytes_in_place(tensor, size):
    """A read-only view of the `size` bytes of a contiguous CPU tensor's elements, without copying them (ctypes:
    the same on torch 1.5 .. 2.x, whose other ways to it differ by version or by dtype, e.g. numpy lacks bfloat16)."""
    return memoryview((ctypes.c_char * size).from_address(tensor.data_ptr())).cast("B")
