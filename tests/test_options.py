"""Every numeric flag of main.py is checked up front: a value out of range, a non-finite value or flags that
contradict each other end in one `error:` line naming the flag, exit 2, before anything is written; an unusable
--output-dir likewise. A new numeric flag cannot slip past the table."""
import os
import re

import pytest

import main
from training import options, recipes
from training.cli import Number

BASE = ["--dummy", "-a", "shufflenet_v2_x0_5", "--device", "cpu"]

# (flags, the flag the error line must name): the values once found to slip through first, then every other one
BAD_FLAGS = [
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"),
    (["--momentum", "-1"], "--momentum"), (["--momentum", "nan"], "--momentum"),
    (["--wd", "-1"], "--wd"), (["--wd", "nan"], "--wd"),
    (["--warm_up_epochs", "nan"], "--warm_up_epochs"), (["--warm_up_epochs", "-5"], "--warm_up_epochs"),
    (["--seed", "99999999999999999999999"], "--seed"), (["--seed", "-1"], "--seed"),
    (["--start-epoch", "-3"], "--start-epoch"), (["--start-epoch", "5", "--epochs", "2"], "--start-epoch"),
    (["--color-jitter", "nan"], "--color-jitter"), (["--color-jitter", "-0.1"], "--color-jitter"),
    (["--checkpoint-freq", "-1"], "--checkpoint-freq"),
    (["--train-crop-size", "1"], "--train-crop-size"),
    (["--val-crop-size", "0"], "--val-crop-size"), (["--val-resize-size", "8"], "--val-resize-size"),
    (["--val-resize-size", "64", "--val-crop-size", "96"], "--val-resize-size"),
    (["--train-crop-scale", "nan", "1"], "--train-crop-scale"), (["--train-crop-scale", "0.5", "0.2"],
                                                                  "--train-crop-scale"),
    (["--num-classes", "0"], "--num-classes"), (["--workers", "-1"], "--workers"),
    (["--epochs", "0"], "--epochs"), (["--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--batch-size", "0"], "--batch-size"),
    (["--norm-weight-decay", "-1"], "--norm-weight-decay"), (["--bias-weight-decay", "inf"], "--bias-weight-decay"),
    (["--label-smoothing", "1"], "--label-smoothing"), (["--label-smoothing", "nan"], "--label-smoothing"),
    (["--benchmark", "1", "--optimizer-batch-size", "0"], "--optimizer-batch-size"),
    (["--model-ema", "1"], "--model-ema"), (["--model-ema", "nan"], "--model-ema"),
    (["--bn-recalibrate", "-1"], "--bn-recalibrate"), (["--gpu", "-2"], "--gpu"),
    (["--world-size", "0"], "--world-size"), (["--world-size", "2", "--rank", "2"], "--rank"),
    (["--rank", "-5"], "--rank"), (["--port", "70000"], "--port"), (["--port", "0"], "--port"),
    (["--device_num", "0"], "--device_num"), (["--local_rank", "-2"], "--local_rank"),
    (["--dist-timeout", "0"], "--dist-timeout"), (["--dist-timeout", "nan"], "--dist-timeout"),
    (["--print-freq", "0"], "--print-freq"), (["--eval-freq", "0"], "--eval-freq"),
    (["--amp", "--loss-scale", "nan"], "--loss-scale"),
]


def named_flags(line):
    """The spellings of the flag an error line names: `error: argument --wd/--weight-decay: must be ...` (a value
    outside its flag's range, argparse's line) or `error: --start-epoch 5 leaves ...` (flags that disagree)."""
    match = re.match(r"error: argument (\S+): ", line)
    return match.group(1).split("/") if match else line.split()[1:2]


def expect_error(argv, tmp_path, capsys, flag):
    out = tmp_path / "out"
    code = main.main(BASE + argv + ["--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and flag in named_flags(err[0]), err
    assert not out.exists()  # nothing written
    return err[0]


@pytest.mark.smoke
@pytest.mark.parametrize("argv, flag", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_numeric_flag_is_one_error_line(argv, flag, tmp_path, capsys):
    line = expect_error(argv, tmp_path, capsys, flag)
    assert argv[-1] in line or "--epochs" in line  # the bad value is shown


def test_every_numeric_flag_declares_its_range():
    """A numeric flag added to the parser with a bare int/float type (no allowed values) fails here, and so does
    one whose range no case above tries."""
    actions = options.build_parser()._actions
    assert [a.dest for a in actions if a.type in (int, float) and not a.choices] == []
    ranged = [a for a in actions if isinstance(a.type, Number)]
    flagged = {flag for argv, flag in BAD_FLAGS}
    assert len(ranged) > 30 and [a.dest for a in ranged if not flagged & set(a.option_strings)] == []


@pytest.mark.parametrize("recipe", (None,) + tuple(recipes.NAMES))
def test_defaults_and_recipes_pass_the_checks(recipe, tmp_path):
    args = options.parse_args(BASE + ["--output-dir", str(tmp_path)] + (["--recipe", recipe] if recipe else []))
    options.check_args(args)
    assert 0 <= args.seed <= options.MAX_SEED


def test_unusable_output_dir_is_one_error_line(tmp_path, capsys):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    for path in (regular, regular / "below"):
        code = main.main(BASE + ["--output-dir", str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == ["error: --output-dir {}: {} is a file, not a folder".format(path, regular)]
    assert regular.read_text() == "not a folder"


def test_read_only_output_dir_is_one_error_line(tmp_path, capsys, monkeypatch):
    """A folder this user cannot write in (tests run as root, whom permissions do not stop: os.access is what
    the check asks, so it is answered here as for a read-only folder)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(folder) else real_access(path,
                                                                                                            mode))
    for path, words in ((folder, "cannot write in"), (folder / "new", "cannot create folders in")):
        code = main.main(BASE + ["--output-dir", str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == ["error: --output-dir {}: this user {} {}".format(path, words, folder)], err
    assert list(folder.iterdir()) == []
