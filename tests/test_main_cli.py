"""main.py: every bad-input case ends in one `error: ...` line and exit status 2 (no traceback), in one process and
in a group of processes; a failed start leaves an earlier run's files as they were."""
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, tiny_run_args

import main

TINY = tiny_run_args("-b", "4", "--epochs", "1")
IMAGE_FOLDER = dict(classes=2, train_per_class=2, val_per_class=1)  # data_root's shape (conftest.py)


def run_main(argv, capsys):
    code = main.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def expect_error(argv, capsys, *fragments):
    code, err = run_main(argv, capsys)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_data_folder_problems(tmp_path, data_root, capsys):
    expect_error(TINY, capsys, "--data DIR is required")
    expect_error(TINY + ["--data", str(tmp_path / "nowhere")], capsys, str(tmp_path / "nowhere"))
    no_val = str(tmp_path / "no_val")
    shutil.copytree(os.path.join(data_root, "train"), os.path.join(no_val, "train"))
    expect_error(TINY + ["--data", no_val], capsys, "val")
    no_train = str(tmp_path / "no_train")
    shutil.copytree(os.path.join(data_root, "val"), os.path.join(no_train, "val"))
    expect_error(TINY + ["--data", no_train], capsys, "train")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    expect_error(TINY + ["--data", str(empty)], capsys, "train")
    no_images = tmp_path / "no_images"
    for split in ("train", "val"):
        (no_images / split / "cat").mkdir(parents=True)
        (no_images / split / "cat" / "notes.txt").write_text("not an image")
    expect_error(TINY + ["--data", str(no_images)], capsys, "cat")


def test_flag_problems(data_root, tmp_path, capsys):
    expect_error(TINY + ["--data", data_root, "-a", "resnet50"], capsys, "resnet50", "shufflenet_v2_x0_5",
                 "shufflenet_v2_x2_0")
    expect_error(TINY + ["--data", data_root, "-b", "4", "--multiprocessing-distributed", "--device_num", "3"],
                 capsys, "--batch-size 4", "world size 3")
    expect_error(TINY + ["--data", data_root, "--benchmark", "1", "--optimizer-batch-size", "6"], capsys,
                 "--optimizer-batch-size 6")
    expect_error(TINY + ["--data", data_root, "--amp", "--loss-scale", "big"], capsys, "--loss-scale")
    expect_error(TINY + ["--dummy", "--train-crop-scale", "0", "1"], capsys, "--train-crop-scale", "> 0", "got 0")
    # --evaluate scores weights: without --resume or --pretrained there are none to score
    expect_error(TINY + ["--data", data_root, "--evaluate", "--output-dir", str(tmp_path / "ev")], capsys,
                 "--evaluate needs weights", "--resume FILE or --pretrained")
    assert not os.path.exists(str(tmp_path / "ev"))
    expect_error(TINY + ["--dummy", "--evaluate", "--pretrained"], capsys,
                 "--evaluate --dummy: synthetic data has no accuracy to measure; give --data DIR")


def test_npu_without_torch_npu_names_the_reason(data_root, capsys, monkeypatch):
    from training import device as devices
    monkeypatch.setattr(devices, "_IMPORTS", {})
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # import fails like a machine without CANN
    expect_error(TINY + ["--data", data_root, "--device", "npu"], capsys, "torch_npu cannot be used",
                 "ModuleNotFoundError")


def test_resume_problems(data_root, tmp_path, capsys):
    expect_error(TINY + ["--data", data_root, "--resume", str(tmp_path / "none.pth.tar")], capsys,
                 "--resume: checkpoint not found: ")
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(b"PK\x03\x04 truncated zip")
    expect_error(TINY + ["--data", data_root, "--resume", str(truncated)], capsys, "damaged checkpoint")
    text = tmp_path / "notes.pth.tar"
    import torch
    torch.save({"hello": "world"}, str(text))
    expect_error(TINY + ["--data", data_root, "--resume", str(text)], capsys, "is not a checkpoint")


@pytest.mark.slow
def test_entry_point_prints_one_line_and_exits_2(tmp_path):
    """The real process: exit status and no traceback on stderr."""
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", str(tmp_path / "x")]
                            + TINY, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_failing_rank_reports_its_own_error_in_one_line(data_root, tmp_path):
    """--multiprocessing-distributed: the ranks are processes of their own; the one line names the rank's reason."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--multiprocessing-distributed",
                             "--device_num", "2", "--num-classes", "1", "--data", data_root,
                             "--output-dir", str(tmp_path / "out")] + TINY, capture_output=True, text=True,
                            env=env, timeout=240)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: process ") and " of 2 exited with code 2: " in lines[0], lines[0]
    assert lines[0].endswith("--num-classes 1 is smaller than the 2 class folders in {}".format(
        os.path.join(data_root, "train"))), lines[0]


def test_a_failed_start_leaves_the_earlier_run_as_it_was(data_root, tmp_path, capsys):
    """A batch larger than the data set fails before training: an earlier run's files in --output-dir stay."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"metrics.jsonl": b'{"kind": "epoch", "epoch": 0}\n', "checkpoint.pth.tar": b"earlier checkpoint"}
    for name, content in earlier.items():
        (out / name).write_bytes(content)
    expect_error(TINY + ["--data", data_root, "-b", "8", "--output-dir", str(out)], capsys,
                 "fewer than one batch of 8")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
