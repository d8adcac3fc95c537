"""training/options.py's warm-up warning: about flags the user gave, never about a recipe's own defaults."""
import pytest

from training import options


def warnings_for(argv):
    args = options.parse_args(argv)
    return [line for line in options.lr_warnings(args, options.given_dests(argv)) if "--warm_up_epochs" in line]


@pytest.mark.parametrize("argv", [
    ["--dummy", "--recipe", "modelzoo_performance_8p"],  # the original's 5 warm-up epochs in a 1-epoch run
    ["--dummy", "--recipe", "modelzoo_performance_1p", "--lr", "0.1"],
])
def test_a_recipes_own_warm_up_is_not_warned_about(argv):
    assert warnings_for(argv) == []


@pytest.mark.parametrize("argv, warm_up, epochs", [
    (["--dummy", "--recipe", "modelzoo_performance_1p", "--epochs", "1"], "1", "1"),  # the user shortened it
    (["--dummy", "--recipe", "modelzoo_performance_8p", "--warm_up_epochs", "2"], "2", "1"),
    (["--dummy", "--warmup-epochs", "3", "--epochs", "2"], "3", "2"),
])
def test_a_warm_up_the_user_made_as_long_as_the_run_is_warned_about(argv, warm_up, epochs):
    warning, = warnings_for(argv)
    assert warning.startswith("warning: --warm_up_epochs {} >= --epochs {}: the whole run is warm-up".format(
        warm_up, epochs))
