"""`--resume auto`: the newest complete checkpoint that --output-dir holds, or none (start fresh).

CheckpointSaver (training/checkpoints/checkpoint.py) writes, after an epoch, `PREFIX_epochN.pth.tar` (every
--checkpoint-freq
epochs) and then the rolling `PREFIX.pth.tar`. So the rolling checkpoint is the newest unless it is missing,
unreadable, or a kill came between the two writes (then `PREFIX_epochN` is one epoch ahead and written later).
A numbered copy with more epochs but an older file than the rolling checkpoint belongs to an earlier run in the
same folder and is not taken.
"""
import os
import re

from training.checkpoints import checkpoint as ckpt
from training.errors import UserError


def _complete_epoch(path):
    """The epoch count of a full training checkpoint at `path`, else None (unreadable, bare weights, foreign)."""
    try:
        saved = ckpt.load_checkpoint(path)
    except UserError:
        return None
    if not isinstance(saved.get("epoch"), int) or "optimizer" not in saved or "state_dict" not in saved:
        return None
    return saved["epoch"]


def epochs_done(path):
    """The epoch count stored in the checkpoint at `path` (0 when it has none)."""
    return _complete_epoch(path) or 0


def numbered_checkpoints(output_dir, prefix):
    """[(N, path)] of the `PREFIX_epochN.pth.tar` files in `output_dir`, highest N first."""
    pattern = re.compile(r"^{}_epoch(\d+)\.pth\.tar$".format(re.escape(prefix)))
    try:
        names = os.listdir(output_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, name)) for name in names for m in [pattern.match(name)] if m]
    return sorted(found, reverse=True)


def find_checkpoint(output_dir, prefix="checkpoint"):
    """(path or None, the one line that says what `--resume auto` does)."""
    rolling = os.path.join(output_dir, "{}.pth.tar".format(prefix))
    rolling_epoch = _complete_epoch(rolling) if os.path.isfile(rolling) else None
    skipped = ""
    if os.path.isfile(rolling) and rolling_epoch is None:
        skipped = "; {} is not a complete checkpoint".format(os.path.abspath(rolling))
    for number, path in numbered_checkpoints(output_dir, prefix):
        if rolling_epoch is not None and (number <= rolling_epoch
                                          or os.path.getmtime(path) <= os.path.getmtime(rolling)):
            continue
        epoch = _complete_epoch(path)
        if epoch is not None:
            return path, _continuing(path, epoch, skipped)
    if rolling_epoch is not None:
        return rolling, _continuing(rolling, rolling_epoch, skipped)
    return None, "=> --resume auto: no checkpoint in {}, starting fresh{}".format(os.path.abspath(output_dir),
                                                                                    skipped)


def _continuing(path, epoch, skipped):
    return "=> --resume auto: continuing from {} (after {} epoch(s)){}".format(os.path.abspath(path), epoch, skipped)


def resolve(args):
    """Turn `--resume auto` into the newest complete checkpoint in --output-dir, or "" (a fresh start); returns
    the line that says which."""
    path, line = find_checkpoint(args.output_dir, args.checkpoint_nameprefix)
    args.resume = path or ""
    if path and not args.evaluate and epochs_done(path) >= args.epochs:
        line += "; that run is complete (--epochs {}): nothing left to train".format(args.epochs)
    if args.evaluate and not (args.resume or args.pretrained):
        raise UserError("--evaluate --resume auto: no checkpoint in {} to score".format(args.output_dir))
    return line
