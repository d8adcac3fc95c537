"""--resume auto: which checkpoint of --output-dir it continues from (training/checkpoints/auto_resume.py), and end
to end a
run stopped after epoch 1 that continues at epoch 2 and ends with the weights of an uninterrupted run."""
import json
import os

import pytest
import torch

import main
from tests.datasets import make_image_folder
from training.checkpoints.auto_resume import find_checkpoint
from training.checkpoints.checkpoint import torch_load

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
    save(tmp_path, "checkpoint_epoch3.pth.tar", 3, 1002, full=False)  # bare weights: not a training checkpoint
    rolling = tmp_path / "checkpoint.pth.tar"
    rolling.write_bytes(b"PK\x03\x04 truncated")
    assert find_checkpoint(str(tmp_path)) == (ahead, "=> --resume auto: continuing from {} (after 2 epoch(s)); {} "
                                              "is not a complete checkpoint".format(ahead, rolling))
    os.remove(ahead)
    os.remove(str(tmp_path / "checkpoint_epoch1.pth.tar"))
    path, line = find_checkpoint(str(tmp_path))
    assert path is None and line.endswith("starting fresh; {} is not a complete checkpoint".format(rolling))


def test_other_prefix(tmp_path):
    save(tmp_path, "checkpoint.pth.tar", 4, 1000)
    mine = save(tmp_path, "run_a.pth.tar", 1, 900)
    assert find_checkpoint(str(tmp_path), "run_a")[0] == mine


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("auto") / "data"), classes=3, train_per_class=4,
                             val_per_class=2, size=(36, 36))


def test_stopped_after_epoch_1_continues_at_epoch_2_with_identical_weights(data_root, tmp_path, capsys,
                                                                           monkeypatch):
    from training import engine
    # -j 0: exact resume with loader workers needs the data branch (i11, per-epoch worker seeds), not merged yet
    argv = ["-a", "shufflenet_v2_x0_5", "-j", "0", "--train-crop-size", "32", "--val-resize-size", "32",
            "--val-crop-size", "32", "--device", "cpu", "--lr", "0.05", "--seed", "7", "-b", "4", "--epochs", "3",
            "--steps-per-epoch", "2", "--eval-freq", "1", "--momentum", "0.9", "--model-ema", "0.5",
            "--color-jitter", "0.4", "-p", "1", "--data", data_root]
    full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
    assert main.main(argv + ["--output-dir", full]) == 0
    capsys.readouterr()

    real_train = engine.train_one_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt()
        return real_train(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_epoch_2)
    assert main.main(argv + ["--resume", "auto", "--output-dir", stopped]) == 130
    first = capsys.readouterr().out.splitlines()
    assert first[0] == "=> --resume auto: no checkpoint in {}, starting fresh".format(os.path.abspath(stopped))
    monkeypatch.setattr(engine, "train_one_epoch", real_train)

    assert main.main(argv + ["--resume", "auto", "--output-dir", stopped]) == 0
    out = capsys.readouterr().out.splitlines()
    rolling = os.path.join(stopped, "checkpoint.pth.tar")
    assert out[0] == "=> --resume auto: continuing from {} (after 1 epoch(s))".format(os.path.abspath(rolling))
    assert "=> resumed from {} at epoch 1 (best Acc@1".format(rolling) in "\n".join(out)
    assert [line.split("]")[1] for line in out if " Epoch: [" in line][0] == " Epoch: [1"  # the second epoch
    a, b = torch_load(os.path.join(full, "checkpoint.pth.tar")), torch_load(rolling)
    assert a["epoch"] == b["epoch"] == 3 and b["args"]["resume"] == rolling
    for key in ("state_dict", "model_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    with open(os.path.join(stopped, "metrics.jsonl")) as stream:
        epochs = [r["epoch"] for r in map(json.loads, stream) if r["kind"] == "epoch"]
    assert epochs == [0, 1, 2]  # the resumed run appended to the stopped run's records


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
