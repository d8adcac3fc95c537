"""--resume auto never starts fresh over an earlier run's files: a damaged rolling checkpoint falls back to the
newest complete copy (model_best included), no complete copy at all stops with one line listing what is there, and
a fresh start moves a previous run's results into previous-<time>/ instead of truncating them."""
import json
import os

import pytest
import torch

import main
from training.checkpoints import checkpoint as ckpt
from training.checkpoints.auto_resume import find_checkpoint
from training.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--lr", "0.01", "--train-crop-size", "32", "-j", "0",
        "--num-classes", "3", "--device", "cpu", "--seed", "1", "-p", "1", "--steps-per-epoch", "2"]


def copy(source, target):
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())


def content(path):
    with open(path, "rb") as stream:
        return stream.read()


def truncate(path):
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)


def flip_a_tensor(path):
    """Invert 64 bytes in the middle of the largest stored tensor (size unchanged): only the digest can tell."""
    state_dict = ckpt.torch_load(path)["state_dict"]
    stored = max(state_dict.values(), key=lambda t: t.numel()).contiguous().numpy().tobytes()
    data = bytearray(content(path))
    middle = data.find(stored) + len(stored) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    with open(path, "wb") as stream:
        stream.write(data)


def kinds(metrics):
    with open(metrics) as stream:
        return [(r["kind"], r["epoch"]) for r in map(json.loads, stream) if r["kind"] in ("epoch", "resume")]


@pytest.fixture
def two_epochs(tmp_path, capsys):
    """A run of 2 of 3 epochs, with a model_best.pth.tar after epoch 1 (as a validated run writes it: the same
    training checkpoint) and the rolling checkpoint after epoch 2."""
    out = str(tmp_path / "run")
    assert main.main(TINY + ["--epochs", "1", "--output-dir", out]) == 0
    copy(os.path.join(out, "checkpoint.pth.tar"), os.path.join(out, "model_best.pth.tar"))
    assert main.main(TINY + ["--epochs", "2", "--resume", "auto", "--output-dir", out]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("damage", [truncate, flip_a_tensor])
def test_a_damaged_rolling_checkpoint_falls_back_to_model_best(two_epochs, capsys, damage):
    rolling, best = (os.path.abspath(os.path.join(two_epochs, name)) for name in ("checkpoint.pth.tar",
                                                                                   "model_best.pth.tar"))
    damage(rolling)
    best_before = content(best)
    with pytest.raises(UserError) as info:
        ckpt.load_checkpoint(rolling)
    assert main.main(TINY + ["--epochs", "3", "--resume", "auto", "--output-dir", two_epochs]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("=> --resume auto: continuing from {} (after 1 epoch(s); the best-accuracy checkpoint, which "
                      "holds the full training state); skipped {}".format(best, info.value))
    assert kinds(os.path.join(two_epochs, "metrics.jsonl")) == [("epoch", 0), ("resume", 1), ("epoch", 1),
                                                                ("resume", 1), ("epoch", 1), ("epoch", 2)]
    assert content(best) == best_before  # --dummy: no accuracy, so no new best; nothing of the run is lost
    assert ckpt.load_checkpoint(rolling)["epoch"] == 3


def test_no_complete_checkpoint_stops_with_one_line_and_touches_nothing(two_epochs, capsys):
    rolling, best = (os.path.abspath(os.path.join(two_epochs, name)) for name in ("checkpoint.pth.tar",
                                                                                   "model_best.pth.tar"))
    container = "a zip archive" if content(rolling).startswith(b"PK") else "a pickle stream"  # torch < 1.6: legacy
    truncate(rolling)
    flip_a_tensor(best)
    before = {name: content(os.path.join(two_epochs, name)) for name in os.listdir(two_epochs)}
    assert main.main(TINY + ["--epochs", "3", "--resume", "auto", "--output-dir", two_epochs]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --resume auto: no complete checkpoint in {}, and starting fresh would overwrite what is "
                   "there: {}: damaged checkpoint ({} that torch.load cannot read: cut short or damaged); "
                   "{}: damaged checkpoint (its contents do not match the sha256 digest stored in it: changed on disk "
                   "after it was written); move them away to start afresh, or --resume one of them".format(
                       os.path.abspath(two_epochs), rolling, container, best)]
    assert {name: content(os.path.join(two_epochs, name)) for name in os.listdir(two_epochs)} == before


def test_a_fresh_start_moves_the_previous_results_aside(two_epochs, capsys):
    before = {name: content(os.path.join(two_epochs, name)) for name in os.listdir(two_epochs)}
    assert main.main(TINY + ["--epochs", "1", "--output-dir", two_epochs]) == 0
    out = capsys.readouterr().out.splitlines()
    kept = [name for name in os.listdir(two_epochs) if name.startswith("previous-")]
    assert len(kept) == 1
    moved_to = os.path.join(two_epochs, kept[0])
    assert out[0] == "=> the previous run's metrics.jsonl and checkpoints in {} were moved to {}".format(
        os.path.abspath(two_epochs), moved_to)
    assert {name: content(os.path.join(moved_to, name)) for name in os.listdir(moved_to)} == before
    assert kinds(os.path.join(two_epochs, "metrics.jsonl")) == [("epoch", 0)]


def save(folder, name, epoch, mtime):
    path = os.path.join(str(folder), name)
    ckpt.atomic_save(ckpt.build_checkpoint(epoch, "x", {"w": torch.full((2,), float(epoch))}, {"state": {}}, 0.0, {},
                                           with_rng=False), path)
    os.utime(path, (mtime, mtime))
    return path


def test_model_best_written_after_the_rolling_checkpoint_is_ahead(tmp_path):
    """A kill between model_best and the rolling checkpoint of the same epoch."""
    save(tmp_path, "checkpoint.pth.tar", 1, 1000)
    best = save(tmp_path, "model_best.pth.tar", 2, 1001)
    assert find_checkpoint(str(tmp_path))[0] == best
    save(tmp_path, "model_best.pth.tar", 3, 900)  # an older run's best: more epochs but an older file
    assert find_checkpoint(str(tmp_path))[0] == os.path.join(str(tmp_path), "checkpoint.pth.tar")
