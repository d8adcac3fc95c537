"""--resume auto: which checkpoint of --output-dir it continues from (training/checkpoints/auto_resume.py), and a
finished run that has nothing left to train (a stopped run that continues: test_exact_resume.py)."""
import os

import pytest
import torch

import main
from training.checkpoints.auto_resume import find_checkpoint
from training.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def save(folder, name, epoch, mtime, full=True):
    path = os.path.join(str(folder), name)
    weights = {"w": torch.full((2,), float(epoch))}
    torch.save({"epoch": epoch, "state_dict": weights, "optimizer": {"state": {}}} if full else weights, path)
    os.utime(path, (mtime, mtime))
    return path


def test_empty_or_missing_folder_starts_fresh(tmp_path):
    assert find_checkpoint(str(tmp_path)) == (None, "=> --resume auto: no checkpoint in {}, starting fresh".format(
        tmp_path))
    assert find_checkpoint(str(tmp_path / "nowhere"))[0] is None


def test_the_rolling_checkpoint_when_it_is_the_newest(tmp_path):
    save(tmp_path, "checkpoint_epoch1.pth.tar", 1, 1000)
    save(tmp_path, "checkpoint_epoch5.pth.tar", 5, 1500)  # an earlier run's copy: more epochs, but older
    rolling = save(tmp_path, "checkpoint.pth.tar", 2, 2000)
    assert find_checkpoint(str(tmp_path)) == (rolling, "=> --resume auto: continuing from {} (after 2 epoch(s))"
                                              .format(rolling))


def test_a_numbered_copy_written_after_the_rolling_one(tmp_path):
    """A kill between the two writes of one epoch: the numbered copy is one epoch ahead and newer."""
    save(tmp_path, "checkpoint.pth.tar", 1, 1000)
    ahead = save(tmp_path, "checkpoint_epoch2.pth.tar", 2, 1001)
    assert find_checkpoint(str(tmp_path))[0] == ahead


def test_unreadable_rolling_checkpoint_falls_back_to_the_newest_numbered_one(tmp_path):
    save(tmp_path, "checkpoint_epoch1.pth.tar", 1, 1000)
    ahead = save(tmp_path, "checkpoint_epoch2.pth.tar", 2, 1001)
    bare = save(tmp_path, "checkpoint_epoch3.pth.tar", 3, 1002, full=False)  # bare weights: not a training checkpoint
    rolling = tmp_path / "checkpoint.pth.tar"
    rolling.write_bytes(b"PK\x03\x04 truncated")
    skipped = ("; skipped {}: damaged checkpoint (a zip archive that torch.load cannot read: cut short or damaged); "
               "skipped {}: weights only, no training state".format(rolling, bare))
    assert find_checkpoint(str(tmp_path)) == (ahead, "=> --resume auto: continuing from {} (after 2 epoch(s)){}"
                                              .format(ahead, skipped))
    os.remove(ahead)
    os.remove(str(tmp_path / "checkpoint_epoch1.pth.tar"))
    with pytest.raises(UserError, match="^--resume auto: no complete checkpoint in "):  # never a fresh start over them
        find_checkpoint(str(tmp_path))


def test_other_prefix(tmp_path):
    save(tmp_path, "checkpoint.pth.tar", 4, 1000)
    mine = save(tmp_path, "run_a.pth.tar", 1, 900)
    assert find_checkpoint(str(tmp_path), "run_a")[0] == mine


def test_a_finished_run_says_nothing_is_left(tmp_path, capsys):
    argv = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--lr", "0.01", "--epochs", "1", "--steps-per-epoch",
            "1", "--train-crop-size", "32", "-j", "0", "--num-classes", "3", "--device", "cpu", "--seed", "1",
            "--resume", "auto", "--output-dir", str(tmp_path)]
    assert main.main(argv) == 0
    assert main.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    rolling = os.path.join(str(tmp_path), "checkpoint.pth.tar")
    assert ("=> --resume auto: continuing from {} (after 1 epoch(s)); that run is complete (--epochs 1): nothing "
            "left to train".format(rolling)) in out
    assert sum(" Epoch: [0]" in line for line in out) == 1  # trained once
