"""Warnings about a learning rate that no longer fits the run: `lr_warnings(args, given)` -> lines to print.

The default `--lr` (and a recipe's) was tuned for one global batch; with another batch and no `--lr`, a run can
diverge without a word (issue 13: `-b 32` with lr 0.5 went from loss 2.4 to 80). The common remedy is the linear
scaling rule, lr * batch / tuned_batch, which the warning names. A warm-up as long as the run never reaches the
peak learning rate, whether or not --warm_up_epochs was given (a launcher passes it always).
"""
from training import recipes

DEFAULT_TUNED_BATCH = 1024  # the batch of main.py's default --lr 0.5 (the paper's recipe)


def tuned_batch(recipe):
    """The global batch the learning rate of `recipe` (None: main.py's defaults) was tuned for."""
    if recipe:
        values = recipes.defaults(recipe)
        if "lr" in values and "batch_size" in values:
            return values["batch_size"]
    return DEFAULT_TUNED_BATCH


def lr_warnings(args, given):
    """`warning: ...` lines for these flags; `given` is the set of argparse dests given on the command line
    (options.given_dests)."""
    lines = []
    batch = tuned_batch(getattr(args, "recipe", None))
    if "lr" not in given and args.batch_size != batch:
        lines.append("warning: --lr {:g} was tuned for batch {}, this run uses --batch-size {}: the linearly scaled "
                     "value is --lr {:g} (give --lr to choose)".format(args.lr, batch, args.batch_size,
                                                                        args.lr * args.batch_size / batch))
    if args.warm_up_epochs > 0 and args.warm_up_epochs >= args.epochs:  # given or not: never what one wants
        lines.append("warning: --warm_up_epochs {:g} >= --epochs {}: the whole run is warm-up, the learning rate "
                     "never reaches --lr {:g}".format(args.warm_up_epochs, args.epochs, args.lr))
    return lines
