"""training/options.py's parsing: an unknown or malformed flag is one `error:` line (not argparse's usage text),
with the closest known flag for a near miss; a main.py started by a ModelZoo launcher suggests the launcher's
spellings first."""
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import main
from training import options
from training.errors import UserError
from training.launch import modelzoo


def error_line(argv, capsys):
    assert main.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["--dummy", "--batchsize=8"], "error: unknown flag --batchsize=8 (did you mean --batch-size?)"),
    (["--dummy", "--batchsize", "8"], "error: unknown flag --batchsize (did you mean --batch-size?)"),
    (["--dummy", "--warmup_epochs", "1"], "error: unknown flag --warmup_epochs (did you mean --warmup-epochs?)"),
    (["--dummy", "--colour-jitter=0.1", "--zebra"],
     "error: unknown flags --colour-jitter=0.1 (did you mean --color-jitter?), --zebra"),
    (["--dummy", "stray"], "error: unexpected argument stray (every value follows its flag)"),
    (["--dummy", "--lr-schedule", "step"], "error: argument --lr-schedule: invalid choice: 'step' (choose from "),
    (["--dummy", "--recipe"], "error: argument --recipe: expected one argument"),
])
def test_bad_command_lines_are_one_line(argv, expected, capsys, monkeypatch):
    monkeypatch.delenv(modelzoo.LAUNCHER_ENV, raising=False)
    line = error_line(argv, capsys)
    assert line == expected or (expected.endswith("(choose from ") and line.startswith(expected)), line


def test_started_by_a_launcher_it_suggests_the_launchers_spelling(capsys, monkeypatch):
    monkeypatch.setenv(modelzoo.LAUNCHER_ENV, "train_performance_1p.sh")
    assert error_line(["--dummy", "--batchsize=8", "--lerning_rate=1"], capsys) == (
        "error: unknown flags --batchsize=8 (did you mean --batch_size?), --lerning_rate=1 (did you mean "
        "--learning_rate?)")
    assert error_line(["--dummy", "--train-crop-sise", "64"], capsys) == (  # main.py's own flags still count
        "error: unknown flag --train-crop-sise (did you mean --train-crop-size?)")


def test_closest_flag_prefers_earlier_candidates_and_refuses_far_ones():
    assert options.closest_flag("--batchsize", ["--batch_size", "--batch-size"]) == "--batch_size"
    assert options.closest_flag("--batchsize", ["--batch-size", "--batch_size"]) == "--batch-size"
    assert options.closest_flag("--foo", ["--gpu", "--lr", "-b"]) is None


def test_parse_args_raises_a_user_error():
    with pytest.raises(UserError, match=r"^unknown flag --nope$"):
        options.parse_args(["--dummy", "--nope"])


def test_the_process_prints_one_line_and_exits_2(tmp_path):
    env = dict(os.environ)
    env.pop(modelzoo.LAUNCHER_ENV, None)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--dummy", "--batchsize=8"],
                            capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: unknown flag --batchsize=8 (did you mean --batch-size?)"]
