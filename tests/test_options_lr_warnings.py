"""training/options.py: one warning line when the batch differs from the one the learning rate was tuned for
(and --lr was not given), naming the linearly scaled value; one when the warm-up covers the whole run."""
import pytest
from conftest import tiny_run_args

import main
from training import options

TINY = tiny_run_args("--dummy", "--epochs", "1", "--steps-per-epoch", "1", "--num-classes", "3", "--seed", "1")


def warnings_for(argv):
    args = options.parse_args(argv)
    return options.lr_warnings(args, options.given_dests(argv))


def test_default_lr_with_another_batch_names_the_scaled_value():
    assert warnings_for(["--dummy", "-b", "32"]) == [
        "warning: --lr 0.5 was tuned for batch 1024, this run uses --batch-size 32: the linearly scaled value is "
        "--lr 0.015625 (give --lr to choose)"]


def test_recipe_lr_is_scaled_from_the_recipe_batch():
    assert warnings_for(["--dummy", "--recipe", "modelzoo_full_1p", "--batch-size", "512"]) == [
        "warning: --lr 0.75 was tuned for batch 1536, this run uses --batch-size 512: the linearly scaled value is "
        "--lr 0.25 (give --lr to choose)"]


@pytest.mark.parametrize("argv", [
    ["--dummy", "-b", "32", "--lr", "0.5"],  # --lr given: the user chose it
    ["--dummy", "-b", "32", "--learning-rate", "0.1"],  # the other spelling
    ["--dummy", "--lr=0.02", "-b", "64"],
    ["--dummy"],  # the default batch matches the default lr
    ["--dummy", "-b", "1024"],
    ["--dummy", "--recipe", "modelzoo_full_8p"],  # the recipe's own batch
    ["--dummy", "--recipe", "paper", "--epochs", "3"],  # no warm-up at all
    ["--dummy", "--warm_up_epochs", "2", "--epochs", "3"],
])
def test_no_warning_when_lr_given_or_batch_matches(argv):
    assert warnings_for(argv) == []


def test_warm_up_as_long_as_the_run():
    assert warnings_for(["--dummy", "--recipe", "modelzoo_full_8p", "--epochs", "3"]) == [
        "warning: --warm_up_epochs 5 >= --epochs 3: the whole run is warm-up, the learning rate never reaches --lr 4"]
    assert warnings_for(["--dummy", "--warmup-epochs", "2", "--epochs", "2", "--lr", "0.1", "-b", "8"]) == [
        "warning: --warm_up_epochs 2 >= --epochs 2: the whole run is warm-up, the learning rate never reaches --lr 0.1"]


def test_main_prints_the_warning_once_before_training(tmp_path, capsys):
    assert main.main(TINY + ["-b", "4", "--output-dir", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    expected = ("warning: --lr 0.5 was tuned for batch 1024, this run uses --batch-size 4: the linearly scaled value "
                "is --lr 0.00195312 (give --lr to choose)")
    assert stdout.count(expected) == 1 and stdout.index(expected) < [i for i, line in enumerate(stdout)
                                                                     if " Epoch: [0]" in line][0]
    assert main.main(TINY + ["-b", "4", "--lr", "0.002", "--output-dir", str(tmp_path)]) == 0
    assert not any(line.startswith("warning:") for line in capsys.readouterr().out.splitlines())
