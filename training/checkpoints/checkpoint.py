"""Checkpoints: atomic writes, full and weights-only loads, RNG state.

A checkpoint is written to a temporary file in the same folder, fsynced and renamed over the old one, so a crash,
Ctrl-C or SIGKILL at any moment leaves either the previous or the new checkpoint, never half a file. Everything in
it is a tensor, number, string, list or dict, so `torch.load(path, weights_only=True)` accepts it, and
`state_dict` has no `module.` prefix, so torchvision's ShuffleNetV2 loads it directly. Each checkpoint carries a
SHA-256 digest of its contents (training/checkpoints/digest.py), checked on every load: a file changed after it was
written is reported as damaged, one written before digests were added loads with a one-line note.
"""
import inspect
import math
import os
import pickle
import re
import reprlib

import torch

from training import compat
from training.checkpoints import digest, safe_unpickle
from training.seeding import rng_state, seed_everything, set_rng_state
from training.errors import UserError
from training.checkpoints.files import atomic_write, make_folder

# Keys of a main.py checkpoint that hold large tensors (left out of `meta`).
_BIG_KEYS = ("state_dict", "optimizer", "model_ema", "amp", "rng", digest.DIGEST_KEY)

# What a file that torch.load cannot read is, by its first bytes: (magic, description, whether torch.save writes it).
_MAGIC = (
    (b"PK\x03\x04", "a zip archive that torch.load cannot read: cut short or damaged", True),
    (b"\x80\x02", "a pickle stream that torch.load cannot read: cut short or damaged", True),
    (b"\xff\xd8\xff", "a JPEG image", False),
    (b"\x89PNG", "a PNG image", False),
    (b"GIF8", "a GIF image", False),
    (b"%PDF", "a PDF document", False),
    (b"\x1f\x8b", "a gzip archive (unpack it first?)", False),
    (b"\x7fELF", "a program (ELF)", False),
)
_SNIFF_BYTES = 4096

# torch.load(weights_only=) exists from torch 1.13 on.
_HAS_WEIGHTS_ONLY = "weights_only" in inspect.signature(torch.load).parameters


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically (training/checkpoints/files.py), creating the folder if needed."""
    make_folder(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, lambda stream: torch.save(obj, stream))


def strip_module_prefix(state_dict):
    """DistributedDataParallel / DataParallel save keys as `module.x`; torchvision expects `x`."""
    prefix = "module."
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def plain(value):
    """argparse values as plain Python (lists instead of tuples), loadable with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def torch_load(path, weights_only=True):
    """torch.load on the CPU. weights_only=True: torch's own weights_only loader where it takes every plain value a
    checkpoint may hold, else the restricted unpickler of training/checkpoints/safe_unpickle.py (torch < 1.13, and
    torch 2.1, whose loader refuses sets, complex numbers and bytes), so no file can run code when it is loaded."""
    if _HAS_WEIGHTS_ONLY and (not weights_only or compat.weights_only_load_takes_plain_values()):
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    if weights_only:
        return torch.load(path, map_location="cpu", pickle_module=safe_unpickle)
    return torch.load(path, map_location="cpu")


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _refused_global(exc):
    """The dotted global a weights-only load refused (ours or torch's message), None for any other failure."""
    if isinstance(exc, safe_unpickle.ForbiddenGlobal):
        return exc.global_name
    # torch 2.x: "Unsupported global: GLOBAL posix.system ...", torch 1.13-2.0: "Unsupported class posix.system"
    found = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(exc)) if isinstance(
        exc, pickle.UnpicklingError) else None
    return found.group(1) if found else None


def _read(path, what):
    """torch_load(path) with every failure turned into a one-line UserError."""
    if path and os.path.isdir(path):
        raise UserError("{}{} is a folder, not a checkpoint file".format(what + " " if what else "", path))
    if not path or not os.path.isfile(path):
        raise UserError("{}checkpoint not found: {}".format(what + ": " if what else "", path))
    try:
        return torch_load(path)
    except Exception as exc:  # truncated zip, pickle of foreign objects, random bytes, a README...
        refused = _refused_global(exc)
        if refused:
            raise UserError("{} is not a safe checkpoint: it names {}, which a checkpoint never holds (only tensors, "
                            "numbers, strings, lists and dicts); nothing in it was run".format(path, refused)) from None
        raise UserError("{}{}: {}".format(what + " " if what else "", path, unreadable_reason(path))) from None


def read_failure(path, exc):
    """Why torch_load(path) raised `exc`, in our words (never torch's text, which advises unsafe loading)."""
    refused = _refused_global(exc)
    if refused:
        return "refused to import {}: a checkpoint never holds it; nothing in the file was run".format(refused)
    return unreadable_reason(path)


def unreadable_reason(path):
    """What a file that torch.load could not read is, from its first bytes: "damaged checkpoint (...)" for the
    formats torch.save writes, "not a PyTorch checkpoint (a JPEG image)" and the like for anything else."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        return "cannot be read: {}".format(exc.strerror or type(exc).__name__)
    for magic, description, written_by_torch in _MAGIC:
        if head.startswith(magic):
            return "{} ({})".format("damaged checkpoint" if written_by_torch else "not a PyTorch checkpoint",
                                    description)
    return "not a PyTorch checkpoint ({})".format(_content_kind(path, head))


def _content_kind(path, head):
    if not head:
        return "an empty file"
    if path.lower().endswith(".onnx"):
        return "an ONNX model: export_onnx.py's output, not its input"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut at the end of the sniffed bytes
                return "a text file"
    return "unrecognised contents, starting with {}".format(head[:8].hex())


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Fields of a main.py checkpoint that main.py and the tools read, with the test each value must pass and what that
# test means (a missing field is fine: older checkpoints and other tools' files lack some).
_FIELD_CHECKS = (
    ("epoch", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
    ("best_acc1", _is_number, "a finite number"),
    ("arch", lambda v: isinstance(v, str), "a string"),
    ("args", lambda v: isinstance(v, dict), "a dict"),
    ("classes", lambda v: v is None or (isinstance(v, list) and all(isinstance(c, str) for c in v)),
     "a list of strings"),
    ("optimizer", lambda v: isinstance(v, dict), "a dict"),
    ("amp", lambda v: v is None or isinstance(v, dict), "a dict"),
    ("model_ema", lambda v: v is None or _is_state_dict(v), "a state_dict"),
    ("rng", lambda v: v is None or isinstance(v, dict), "a dict"),
)


def check_fields(obj, path):
    """UserError naming the first field of a main.py checkpoint dict that has the wrong type."""
    for field, is_valid, expected in _FIELD_CHECKS:
        if field in obj and not is_valid(obj[field]):
            raise UserError("{}: field '{}' should be {}, found {} {}".format(
                path, field, expected, type(obj[field]).__name__, reprlib.repr(obj[field])))


def load_checkpoint(path, what=None, note=None):
    """The dict stored at `path` (a main.py checkpoint or a bare state_dict); UserError for a missing, truncated,
    unsafe, damaged (digest mismatch) or foreign file, a folder, or a field of the wrong type. `what` names the flag
    the path came from (e.g. "--resume") in the message; `note(line)`, when given, is told about a main.py
    checkpoint that has no digest (written before digests were added)."""
    obj = _read(path, what)
    if _is_state_dict(obj):
        return obj
    if not isinstance(obj, dict):
        raise UserError("{} is not a checkpoint: expected a state_dict or a dict with a 'state_dict' entry, found "
                        "{}".format(path, type(obj).__name__))
    verify_digest(obj, path, what=what, note=note)
    if "state_dict" not in obj:
        raise UserError("{} is not a checkpoint: field 'state_dict' is missing (it has {})".format(
            path, ", ".join(sorted(str(k) for k in obj)[:6]) or "no fields"))
    if not _is_state_dict(obj["state_dict"]):
        raise UserError("{}: field 'state_dict' should map parameter names to tensors, found {} {}".format(
            path, type(obj["state_dict"]).__name__, reprlib.repr(obj["state_dict"])))
    check_fields(obj, path)
    return obj


def verify_digest(obj, path, what=None, note=None):
    """UserError when the dict `obj` read from `path` does not match the digest stored in it; `note(line)` (when
    given) hears of a main.py checkpoint without one."""
    state = digest.check(obj)
    if state == "mismatch":
        raise UserError("{}{}: damaged checkpoint (its contents do not match the {} digest stored in it: changed "
                        "on disk after it was written)".format(what + " " if what else "", path, digest.ALGORITHM))
    if state == "missing" and note is not None and "state_dict" in obj:
        note("note: {} has no content digest (written before checkpoints carried one): loaded, but damage to it "
             "cannot be detected".format(path))


def load_model_weights(path, what=None, note=None):
    """(state_dict without `module.` prefixes, meta) for a main.py checkpoint or a bare state_dict.

    `meta` is the checkpoint without its big tensors (arch, epoch, best_acc1, classes, args ...), `{}` for a bare
    state_dict. Used by --resume/--pretrained, tools/demo.py and the exporters; `what` and `note` as in
    load_checkpoint.
    """
    return split_weights(load_checkpoint(path, what, note))


def split_weights(obj):
    """(state_dict without `module.` prefixes, meta) of a dict that load_checkpoint returned."""
    if "state_dict" in obj and not torch.is_tensor(obj["state_dict"]):
        meta = {k: v for k, v in obj.items() if k not in _BIG_KEYS}
        return strip_module_prefix(obj["state_dict"]), meta
    return strip_module_prefix(obj), {}


def load_into_model(model, state_dict, path):
    """load_state_dict with a one-line UserError naming the first mismatching keys (wrong arch or class count)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing {}".format(", ".join(missing[:3])))
        if unexpected:
            parts.append("unexpected {}".format(", ".join(unexpected[:3])))
        if shapes:
            parts.append("shape mismatch in {} ({} vs {})".format(
                shapes[0], tuple(state_dict[shapes[0]].shape), tuple(own[shapes[0]].shape)))
        raise UserError("{} does not fit this model (--arch / --num-classes?): {}".format(path, "; ".join(parts)))
    model.load_state_dict(state_dict)


def build_checkpoint(epoch, arch, model_state, optimizer_state, best_acc1, args, *, classes=None, amp_state=None,
                     ema_state=None, with_rng=True):
    """The dict main.py saves, its digest included (so change nothing in it before saving). `epoch` is the next
    epoch to run (as the original), so --resume continues there."""
    checkpoint = {
        "epoch": int(epoch),
        "arch": arch,
        "state_dict": strip_module_prefix(model_state),
        "optimizer": optimizer_state,
        "best_acc1": float(best_acc1),
        "args": plain(args),
        "classes": plain(classes),
    }
    if amp_state is not None:
        checkpoint["amp"] = amp_state
    if ema_state is not None:
        checkpoint["model_ema"] = strip_module_prefix(ema_state)
    if with_rng:
        checkpoint["rng"] = rng_state()
    return digest.with_digest(checkpoint)


class CheckpointSaver:
    """Which checkpoint files are written when, after each epoch (rank 0 writes; other ranks only track the best):

    - `PREFIX_epochN.pth.tar` every `every` epochs (`--checkpoint-freq`, 0: never),
    - `model_best.pth.tar` when the epoch was evaluated and Acc@1 beat the best so far,
    - `PREFIX.pth.tar`, the rolling checkpoint that `--resume` continues from, always and LAST.

    Each file is replaced atomically, and the rolling one goes last: a kill between two writes leaves the rolling
    checkpoint at the previous epoch, so the resumed run trains that epoch again and rewrites its numbered and best
    copies. (Written first, a kill after it would lose those copies for good.)
    """

    def __init__(self, output_dir, *, prefix="checkpoint", every=0, best_acc1=0.0, meta=None, enabled=True):
        self.output_dir = output_dir
        self.prefix = prefix
        self.every = every
        self.best_acc1 = float(best_acc1)
        self.meta = dict(meta or {})  # arch, args, classes: what does not change during a run
        self.enabled = enabled

    def path(self, suffix=""):
        return os.path.join(self.output_dir, "{}{}.pth.tar".format(self.prefix, suffix))

    @property
    def best_path(self):
        return os.path.join(self.output_dir, "model_best.pth.tar")

    def save(self, epochs_done, acc1, *, model, optimizer, amp, ema=None):
        """After `epochs_done` epochs; `acc1` is None when this epoch was not evaluated. Returns the paths written."""
        is_best = acc1 is not None and acc1 > self.best_acc1
        if is_best:
            self.best_acc1 = float(acc1)
        if not self.enabled:
            return []
        data = build_checkpoint(epochs_done, self.meta.get("arch"), model.state_dict(), optimizer.state_dict(),
                                self.best_acc1, self.meta.get("args", {}), classes=self.meta.get("classes"),
                                amp_state=amp.state_dict(), ema_state=ema.state_dict() if ema is not None else None)
        paths = []
        if self.every and epochs_done % self.every == 0:
            paths.append(self.path("_epoch{}".format(epochs_done)))
        if is_best:
            paths.append(self.best_path)
        paths.append(self.path())
        for path in paths:
            atomic_save(data, path)
        return paths


def describe_on_disk(output_dir, prefix="checkpoint"):
    """One phrase saying what a run stopped now leaves to resume from, read from the disk itself."""
    path = os.path.abspath(os.path.join(output_dir, "{}.pth.tar".format(prefix)))
    if not os.path.isfile(path):
        return "no checkpoint was written to {} yet".format(os.path.dirname(path))
    try:
        epoch = int(load_checkpoint(path).get("epoch"))
    except (UserError, TypeError, ValueError):  # damaged, not ours, or no epoch: say so rather than guess
        return "{} is there but could not be read back".format(path)
    return "{} is intact after {} epoch(s): continue with --resume {}".format(path, epoch, path)


def resume(checkpoint, *, args, world_size, rank, optimizer, amp, ema, log):
    """Restore the training state of a --resume checkpoint; returns (start_epoch, best_acc1). Its weights are
    already in the model; with --pretrained, --evaluate or a bare state_dict that is all it gives."""
    if checkpoint is None:
        return args.start_epoch, 0.0
    bare_state_dict = "state_dict" not in checkpoint or torch.is_tensor(checkpoint["state_dict"])
    if args.pretrained or args.evaluate or bare_state_dict:
        log("=> loaded weights from {}".format(args.resume))
        return args.start_epoch, 0.0
    start_epoch, best_acc1 = int(checkpoint.get("epoch", 0)), float(checkpoint.get("best_acc1", 0.0))
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as exc:  # parameter groups differ: other weight-decay flags or recipe
        raise UserError("--resume {}: its optimizer state does not fit these flags ({}); resume with the flags "
                        "of the original run (--wd, --norm-weight-decay, --bias-weight-decay, --recipe), or "
                        "add --pretrained to load only its weights".format(args.resume, exc)) from None
    amp.load_state_dict(checkpoint.get("amp"))
    if ema is not None and checkpoint.get("model_ema") is not None:
        ema.load_state_dict(checkpoint["model_ema"])
    if world_size == 1:
        set_rng_state(checkpoint.get("rng"))
    else:
        seed_everything(args.seed + rank + 7919 * start_epoch)
    log("=> resumed from {} at epoch {} (best Acc@1 {:.3f})".format(args.resume, start_epoch, best_acc1))
    return start_epoch, best_acc1
