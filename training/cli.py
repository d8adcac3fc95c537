"""Command-line pieces the entry points share: a parser whose every error is one `error:` line, and `Number`, the
`type=` of a numeric flag that declares the flag's allowed range where the flag is declared.

No torch import here: the ModelZoo launcher uses this module and must start without loading torch.
"""
import argparse
import math

from training.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError (printed as one `error:` line, exit status 2)
    instead of the usage text followed by an error line. `--help` still prints the help and exits 0."""

    def error(self, message):
        raise UserError(message)


class Number:
    """argparse `type=` for an int or float flag within a range: finite, `low <= value` (`<` when `low_open`),
    `value <= high` (`<` when `high_open`), or one of `also` (e.g. -1 for "not given"). A value outside it is
    argparse's one error line naming the flag, the value and the range:
    `argument --lr/--learning-rate: must be a finite number > 0, got -1`. Plain attributes: the parser pickles."""

    def __init__(self, kind, low=None, high=None, *, low_open=False, high_open=False, also=()):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.also = low_open, high_open, tuple(also)

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be {}, got {}".format(self.describe(), text)) from None
        if not self.allows(value):
            raise argparse.ArgumentTypeError("must be {}, got {}".format(self.describe(), text))
        return value

    def __repr__(self):  # argparse names the type by repr() in some messages
        return "Number({})".format(self.describe())

    def allows(self, value):
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self):
        """'a finite number > 0', 'an integer >= 1 or -1', ...: the allowed values in words (errors and --help)."""
        bounds = []
        if self.low is not None:
            bounds.append("{} {}".format(">" if self.low_open else ">=", self.low))
        if self.high is not None:
            bounds.append("{} {}".format("<" if self.high_open else "<=", self.high))
        text = "a finite number" if self.kind is float else "an integer"
        if bounds:
            text += " " + " and ".join(bounds)
        return text + "".join(" or {}".format(value) for value in self.also)
