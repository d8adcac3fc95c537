"""main.py: every bad-input case ends in one `error: ...` line and exit status 2 (no traceback), and the launch
plan gives each process of each launch mode the right rank and device."""
import argparse
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import main
from tests.datasets import make_image_folder
from training.launch import modes
from training.errors import UserError

TINY = ["-a", "shufflenet_v2_x0_5", "-b", "4", "-j", "0", "--epochs", "1", "--train-crop-size", "32",
        "--val-resize-size", "32", "--val-crop-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("cli") / "data"), classes=2, train_per_class=2,
                             val_per_class=1, size=(36, 36))


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
    expect_error(TINY + ["--data", data_root, "--resume", str(truncated)], capsys, "not a readable checkpoint")
    text = tmp_path / "notes.pth.tar"
    import torch
    torch.save({"hello": "world"}, str(text))
    expect_error(TINY + ["--data", data_root, "--resume", str(text)], capsys, "is not a checkpoint")


def test_entry_point_prints_one_line_and_exits_2(tmp_path):
    """The real process: exit status and no traceback on stderr."""
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", str(tmp_path / "x")]
                            + TINY, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def flags(**kw):
    base = {"world_size": -1, "rank": -1, "local_rank": -1, "multiprocessing_distributed": False,
            "device_list": "", "device_num": -1, "gpu": None, "batch_size": 48, "dist_url": "", "addr": None,
            "port": None}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "RANK_SIZE", "RANK_ID", "MASTER_ADDR",
                 "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def place(launch, args, index=0):
    """(world size, rank, local rank, device index, processes per node) of process `index` of a launch, read back
    from the torchrun variables it gets (torchrun's own ones stay in os.environ)."""
    ctx = modes.context(dict(os.environ, **launch.ranks[index]))
    return ctx.world_size, ctx.rank, ctx.local_rank, modes.device_index(args, ctx), ctx.local_world_size


def shape(launch):
    return launch.mode, len(launch.ranks), launch.world_size


def test_launch_modes_give_each_process_its_rank_and_device(clean_env):
    # single process, --gpu pins the device
    args = flags(gpu=5)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("single", 1, 1)
    assert place(launch, args) == (1, 0, 0, 5, 1)
    # spawn on node 1 of 2 with a device list: ranks 4..7 on devices 4..7
    args = flags(multiprocessing_distributed=True, device_list="4,5,6,7", world_size=2, rank=1)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("spawn", 4, 8)
    assert [place(launch, args, i) for i in range(4)] == [(8, 4 + i, i, 4 + i, 4) for i in range(4)]
    assert launch.ranks[2]["MASTER_PORT"] == str(modes.DEFAULT_PORT)  # several nodes: a port all can know
    # spawn with --device_num on a CPU node
    args = flags(multiprocessing_distributed=True, device_num=3)
    assert shape(modes.plan(args, 1)) == ("spawn", 3, 3)
    # ModelZoo shell loop: --local_rank with RANK_SIZE from the environment
    clean_env.setenv("RANK_SIZE", "8")
    args = flags(local_rank=3)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("local_rank", 1, 8)
    assert place(launch, args) == (8, 3, 3, 3, 8)
    clean_env.delenv("RANK_SIZE")
    # torchrun
    for name, value in (("RANK", "5"), ("WORLD_SIZE", "6"), ("LOCAL_RANK", "2"), ("LOCAL_WORLD_SIZE", "3"),
                        ("MASTER_ADDR", "10.1.2.3"), ("MASTER_PORT", "23456")):
        clean_env.setenv(name, value)
    args = flags(local_rank=-1)
    launch = modes.plan(args, 3)
    assert shape(launch) == ("torchrun", 1, 6)
    assert launch.ranks == [{}]  # torchrun's variables are used as they are
    assert place(launch, args) == (6, 5, 2, 2, 3)
    # the master address of the other modes: MASTER_ADDR / MASTER_PORT, --dist-url tcp://HOST:PORT
    assert modes.master_address(args) == ("10.1.2.3", 23456)
    assert modes.master_address(flags(dist_url="tcp://h:1")) == ("h", 1)
    with pytest.raises(UserError, match="give tcp://HOST:PORT"):
        modes.master_address(flags(dist_url="file:///tmp/x"))
    with pytest.raises(UserError, match="not divisible by the world size 6"):
        modes.plan(flags(batch_size=50), 3)


def test_every_launch_mode_ends_in_the_torchrun_variables(clean_env):
    """What a process of each mode finds in its environment is what torchrun would have set."""
    names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    spawn = modes.plan(flags(multiprocessing_distributed=True, device_num=2, port=4567), 1)
    assert spawn.ranks == [{"RANK": str(i), "WORLD_SIZE": "2", "LOCAL_RANK": str(i), "LOCAL_WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4567"} for i in range(2)]
    node = modes.plan(flags(world_size=2, rank=1, addr="10.0.0.9", batch_size=4), 1)
    assert node.ranks == [{"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": str(modes.DEFAULT_PORT)}]
    # one-node spawn without a port: a free one, so two runs on one machine do not collide
    free = modes.plan(flags(multiprocessing_distributed=True, device_num=2), 1)
    assert set(free.ranks[0]) == names and free.ranks[0]["MASTER_PORT"] == free.ranks[1]["MASTER_PORT"]
    with modes.environment(node.ranks[0]):
        assert modes.context() == (2, 1, 0, 1)
    assert not names & set(os.environ)  # restored: main() may run again in this process


def test_free_port_is_bindable():
    import socket
    port = modes.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


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
