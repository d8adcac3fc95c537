"""`--resume auto`: the newest complete checkpoint that --output-dir holds; a fresh start only where it holds none.

CheckpointSaver (training/checkpoints/checkpoint.py) writes, after an epoch, `PREFIX_epochN.pth.tar` (every
--checkpoint-freq epochs), `model_best.pth.tar` (when Acc@1 improved) and then the rolling `PREFIX.pth.tar`. So the
rolling checkpoint is the newest unless a kill came between the writes (then a numbered or best copy is one epoch
ahead and written later). A copy with more epochs but an older file than the rolling checkpoint belongs to an
earlier run in the same folder and is not taken.

When the rolling checkpoint is missing or damaged (unreadable, cut short, digest mismatch), the complete copy with
the most epochs is taken: a numbered one, or `model_best.pth.tar`, which holds the whole training state too. When
checkpoint files are there but none is complete, the run stops with one line listing them: starting fresh would
overwrite an earlier run's results.
"""
import os
import re

from training.checkpoints import checkpoint as ckpt
from training.errors import UserError

BEST_NAME = "model_best.pth.tar"


class Candidate:
    """A checkpoint file and what reading it gave: `epoch` (None unless it is a complete training checkpoint) and
    `problem` (why it is not)."""

    def __init__(self, path):
        self.path = path
        self.epoch, self.problem = _inspect(path)

    @property
    def mtime(self):
        return os.path.getmtime(self.path)


def _inspect(path):
    """(epoch count, None) for a full training checkpoint at `path`, else (None, why not)."""
    try:
        saved = ckpt.load_checkpoint(path)
    except UserError as exc:
        return None, str(exc)
    if not isinstance(saved.get("epoch"), int) or "optimizer" not in saved or "state_dict" not in saved:
        return None, "{}: weights only, no training state".format(path)
    return saved["epoch"], None


def numbered_checkpoints(output_dir, prefix):
    """[(N, path)] of the `PREFIX_epochN.pth.tar` files in `output_dir`, highest N first."""
    pattern = re.compile(r"^{}_epoch(\d+)\.pth\.tar$".format(re.escape(prefix)))
    try:
        names = os.listdir(output_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, name)) for name in names for m in [pattern.match(name)] if m]
    return sorted(found, reverse=True)


def checkpoint_files(output_dir, prefix="checkpoint"):
    """The checkpoint files of a run in `output_dir` that --resume auto considers: the rolling one, the numbered
    copies (most epochs first) and model_best, those that exist."""
    paths = [os.path.join(output_dir, "{}.pth.tar".format(prefix))]
    paths += [path for _, path in numbered_checkpoints(output_dir, prefix)]
    paths.append(os.path.join(output_dir, BEST_NAME))
    return [path for path in paths if os.path.isfile(path)]


def find_checkpoint(output_dir, prefix="checkpoint"):
    """(path or None, the one line that says what `--resume auto` does); UserError when checkpoint files are there
    but none of them is complete."""
    chosen, line = choose_checkpoint(output_dir, prefix)
    return (chosen.path if chosen else None), line


def choose_checkpoint(output_dir, prefix="checkpoint"):
    """(Candidate or None, the line), as find_checkpoint."""
    found = [Candidate(path) for path in checkpoint_files(output_dir, prefix)]
    if not found:
        return None, "=> --resume auto: no checkpoint in {}, starting fresh".format(os.path.abspath(output_dir))
    rolling = found[0] if os.path.basename(found[0].path) == "{}.pth.tar".format(prefix) else None
    chosen = _choose(found, rolling)
    if chosen is None:
        raise UserError("--resume auto: no complete checkpoint in {}, and starting fresh would overwrite what is "
                        "there: {}; move them away to start afresh, or --resume one of them".format(
                            os.path.abspath(output_dir), "; ".join(c.problem for c in found)))
    return chosen, _continuing(chosen, [c for c in found if c.epoch is None])


def _choose(found, rolling):
    """The candidate to continue from: a copy ahead of an intact rolling checkpoint and newer than it, else the
    rolling one, else the complete copy with the most epochs (the newest file among equals); None if none is."""
    complete = [c for c in found if c.epoch is not None]
    if rolling is not None and rolling.epoch is not None:
        ahead = [c for c in complete if c.epoch > rolling.epoch and c.mtime > rolling.mtime]
        return max(ahead, key=lambda c: (c.epoch, c.mtime)) if ahead else rolling
    return max(complete, key=lambda c: (c.epoch, c.mtime)) if complete else None


def _continuing(chosen, damaged):
    line = "=> --resume auto: continuing from {} (after {} epoch(s){})".format(
        os.path.abspath(chosen.path), chosen.epoch,
        "; the best-accuracy checkpoint, which holds the full training state" if os.path.basename(
            chosen.path) == BEST_NAME else "")
    return line + "".join("; skipped {}".format(c.problem) for c in damaged)


def resolve(args):
    """Turn `--resume auto` into the newest complete checkpoint in --output-dir, or "" (a fresh start); returns
    the line that says which."""
    chosen, line = choose_checkpoint(args.output_dir, args.checkpoint_nameprefix)
    args.resume = chosen.path if chosen else ""
    if chosen and not args.evaluate and chosen.epoch >= args.epochs:
        line += "; that run is complete (--epochs {}): nothing left to train".format(args.epochs)
    if args.evaluate and not (args.resume or args.pretrained):
        raise UserError("--evaluate --resume auto: no checkpoint in {} to score".format(args.output_dir))
    return line
