"""training/engine.py's non-finite checks: a diverging run stops, a non-finite loss at a step line or the epoch end,
or non-finite weights before a save, end the run with one error line naming epoch, step and value and suggesting a
lower --lr (exit 2), and no checkpoint file ever holds non-finite weights; --lr nan is refused before anything
starts."""
import glob
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_run_args

import main
from training import engine
from training.checkpoints.checkpoint import torch_load

TINY = tiny_run_args("-b", "4", "-p", "1", "--seed", "0", workers=1)
IMAGE_FOLDER = dict(classes=2, train_per_class=4, val_per_class=1)  # data_root's shape (conftest.py)


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_saves_no_nan(data_root, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", data_root, "--lr", "1e6",
                             "--epochs", "4", "--output-dir", str(out)] + TINY, capture_output=True, text=True,
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.match(r"error: the (training loss became (nan|inf|-inf) by epoch \d+, step \d+|weights hold inf or NaN "
                    r"after \d+ epoch\(s\) \(\S+\): not saved, the checkpoints on disk are from earlier epochs)"
                    r".*; restart with a lower --lr \(this run: 1e\+06\)$", lines[0]), lines[0]
    for path in glob.glob(str(out / "*.pth.tar")):  # what was saved before the stop is finite
        saved = torch_load(path)
        assert engine.first_non_finite(saved["state_dict"]) is None, path
        assert saved["epoch"] < 4
    assert "* FPS@all" in result.stdout  # it trained before it diverged


def test_lr_nan_is_refused_before_anything_starts(data_root, tmp_path, capsys):
    for value in ("nan", "inf"):
        out = tmp_path / value
        assert main.main(["--data", data_root, "--lr", value, "--epochs", "1", "--output-dir", str(out)] + TINY) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: argument --lr/--learning-rate: must be a finite number > 0, got {}".format(value)]
        assert not out.exists()


def test_loss_check_names_epoch_step_and_value():
    engine.check_loss(2.5, epoch=0, step=3, base_lr=0.5)
    with pytest.raises(engine.NonFinite) as caught:
        engine.check_loss(float("nan"), epoch=2, step=7, base_lr=0.5)
    assert str(caught.value) == ("the training loss became nan by epoch 2, step 7: training diverged; restart with "
                                 "a lower --lr (this run: 0.5)")


def test_weights_check_names_the_first_bad_tensor():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    engine.check_weights([model], epochs_done=1, base_lr=0.1)
    model[1].running_var[1] = float("inf")
    assert engine.first_non_finite(model.state_dict()) == "1.running_var"
    with pytest.raises(engine.NonFinite, match=r"after 3 epoch\(s\) \(1.running_var\): not saved"):
        engine.check_weights([torch.nn.Linear(1, 1), model], epochs_done=3, base_lr=0.1)
    assert engine.first_non_finite({"steps": torch.tensor(3), "w": torch.zeros(2)}) is None  # integer buffers
