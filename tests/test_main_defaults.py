"""main.py's defaults for a first run: without --output-dir everything goes into output/ under the current folder
(git ignores it), not into the folder itself."""
import os
import subprocess

from conftest import REPO_ROOT

import main

TINY = ["--dummy", "-a", "shufflenet_v2_x0_5", "--epochs", "1", "--steps-per-epoch", "1", "--train-crop-size", "32",
        "--val-crop-size", "32", "-j", "0", "--num-classes", "3", "--device", "cpu", "--seed", "1", "-b", "2",
        "--lr", "0.01"]


def test_without_output_dir_the_run_writes_into_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(str(tmp_path))
    assert main.main(TINY) == 0
    assert os.listdir(str(tmp_path)) == ["output"]
    assert sorted(os.listdir(str(tmp_path / "output"))) == ["checkpoint.pth.tar", "metrics.jsonl"]
    assert "=> --dummy: synthetic data, 1 steps per epoch, validation skipped" in capsys.readouterr().out


def test_git_ignores_the_default_output_folder():
    ignored = subprocess.run(["git", "check-ignore", "-q", os.path.join("output", "metrics.jsonl")], cwd=REPO_ROOT)
    assert ignored.returncode == 0
