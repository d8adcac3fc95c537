"""training/cli.py: `Number`, the range-checking `type=` of numeric flags, and the parser whose every error is one
`error:` line; and what main.py's --help and command line make of them."""
import argparse
import pickle
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import main
from training.cli import Number, Parser
from training.errors import UserError


def parser_with(number):
    parser = Parser(prog="x")
    parser.add_argument("--value", "--other-spelling", type=number)
    return parser


def error_of(parser, argv):
    with pytest.raises(UserError) as caught:
        parser.parse_args(argv)
    return str(caught.value)


@pytest.mark.parametrize("number, accepted, refused", [
    (Number(int, 1), ["1", "7"], ["0", "-1", "1.5", "x", ""]),
    (Number(int, 0, also=[-1]), ["-1", "0", "3"], ["-2"]),
    (Number(int, 1, 65535), ["1", "65535"], ["0", "65536"]),
    (Number(float, 0, low_open=True), ["1e-9", "0.5", "3"], ["0", "-1", "nan", "inf", "x"]),
    (Number(float, 0, 1, high_open=True), ["0", "0.999"], ["1", "-0.1", "nan"]),
    (Number(float, 0, 1, low_open=True, high_open=True), ["0.5"], ["0", "1", "-inf"]),
])
def test_number_accepts_its_range_and_refuses_the_rest(number, accepted, refused):
    parser = parser_with(number)
    for text in accepted:
        assert parser.parse_args(["--value", text]).value == number.kind(text)
    for text in refused:
        message = error_of(parser, ["--value=" + text])
        assert message == "argument --value/--other-spelling: must be {}, got {}".format(number.describe(), text)


def test_number_says_its_range_in_words():
    assert Number(float, 0, low_open=True).describe() == "a finite number > 0"
    assert Number(float, 0, 1, high_open=True).describe() == "a finite number >= 0 and < 1"
    assert Number(int, 1, also=[-1]).describe() == "an integer >= 1 or -1"
    assert Number(int).describe() == "an integer"


def test_number_pickles():
    """Plain attributes, no closures: a spawned process or a saved object may hold one."""
    number = pickle.loads(pickle.dumps(Number(float, 0, 1, low_open=True, also=[-1])))
    assert number("0.25") == 0.25 and number("-1") == -1
    with pytest.raises(argparse.ArgumentTypeError):
        number("0")


def test_parser_errors_are_user_errors_and_help_still_exits_0(capsys):
    parser = parser_with(Number(int, 1))
    assert error_of(parser, ["--nope"]) == "unrecognized arguments: --nope"
    assert error_of(parser, ["--value"]) == "argument --value/--other-spelling: expected one argument"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0 and "usage: x" in capsys.readouterr().out


def test_main_help_shows_each_range_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines wherever the terminal width puts them
    assert "peak learning rate (a finite number > 0; default: 0.5)" in text
    assert "(an integer >= 1 or -1; default: -1)" in text  # --world-size: -1 is "not given"
    assert "random seed (default: a random one, stored in args) (an integer >= 0 and <= 4294967295)" in text
    assert "(default: None)" not in text


@pytest.mark.parametrize("argv, line", [
    (["--bogus"], "error: unknown flag --bogus"),
    (["--lr", "abc"], "error: argument --lr/--learning-rate: must be a finite number > 0, got abc"),
    (["-b", "0"], "error: argument -b/--batch-size: must be an integer >= 1, got 0"),
    (["--device", "tpu"], "error: argument --device: invalid choice: 'tpu'"),
    (["--recipe"], "error: argument --recipe: expected one argument"),
])
def test_main_refuses_a_bad_command_line_in_one_line(argv, line, capsys):
    assert main.main(["--dummy"] + argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err  # argparse's wording after the flag varies by Python


def test_main_py_process_prints_one_line_for_a_bad_flag(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "--dummy", "--momentum", "1", "--output-dir",
                             str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: argument --momentum: must be a finite number >= 0 and < 1, got 1"]
    assert not (tmp_path / "out").exists()
