"""main.py with several CPU processes (gloo): --multiprocessing-distributed (3) and torchrun (2). The val set (7
images) does not divide by either world size; the distributed Acc@1 must equal a 1-process --evaluate of the same
checkpoint, with every image counted exactly once."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, read_jsonl, tiny_run_args

import main
from training.logs import modelzoo_format
from training.checkpoints.checkpoint import torch_load
from training.launch.modes import free_port

SMALL = tiny_run_args("--lr", "0.05", "--seed", "5", "--epochs", "1", "--steps-per-epoch", "2", "-p", "1")
IMAGE_FOLDER = dict(val_per_class=3)  # data_root's shape (conftest.py)


@pytest.fixture(scope="module")
def seven_val_images(data_root):
    """data_root less two val images: 7, a number divisible by neither world size (2 or 3)."""
    for name in ("class_0/val_2.jpg", "class_1/val_2.jpg"):
        os.remove(os.path.join(data_root, "val", name))
    return data_root


def torchrun(nproc):
    """torchrun (torch >= 1.9), else its predecessor with the same environment contract (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): torch.distributed.launch --use_env, as on Ascend's torch 1.8 images."""
    if importlib.util.find_spec("torch.distributed.run") is not None:
        return ["torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return ["torch.distributed.launch", "--use_env", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]


def run(command, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    result = subprocess.run(command, capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def accuracy(stdout):
    accs = [r for r in modelzoo_format.parse_log(stdout.splitlines()) if r["kind"] == "acc"]
    assert len(accs) == 1
    return accs[0]["acc1"], accs[0]["acc5"]


def last_eval(out):
    return [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if r["kind"] == "eval"][-1]


def evaluate_one_process(data_root, out, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main.main(SMALL + ["--data", data_root, "-b", "2", "--evaluate", "--output-dir", out + "-eval",
                                  "--resume", os.path.join(out, "checkpoint.pth.tar")]) == 0
    finally:
        torch.set_num_threads(threads)
    return accuracy(capsys.readouterr().out), last_eval(out + "-eval")["images"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [pytest.param("spawn3", marks=pytest.mark.smoke), "torchrun2"])
def test_distributed_run_matches_single_process_evaluation(launcher, seven_val_images, tmp_path, capsys):
    out = str(tmp_path / launcher)
    if launcher == "spawn3":
        command = [sys.executable, "main.py", "--multiprocessing-distributed", "--device_num", "3", "-b", "6"]
        world = 3
    else:
        command = [sys.executable, "-m"] + torchrun(nproc=2) + ["main.py", "-b", "4"]
        world = 2
    stdout = run(command + SMALL + ["--data", seven_val_images, "--output-dir", out])
    steps = [r for r in modelzoo_format.parse_log(stdout.splitlines()) if r["kind"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(0, 0), (0, 1)]  # rank 0 alone prints
    fps = [r for r in modelzoo_format.parse_log(stdout.splitlines()) if r["kind"] == "fps"]
    assert len(fps) == 1 and fps[0]["fps"] > 0
    distributed_acc = accuracy(stdout)
    assert last_eval(out)["images"] == 7
    assert torch_load(os.path.join(out, "checkpoint.pth.tar"), weights_only=True)["args"]["batch_size"] == 2 * world

    single_acc, images = evaluate_one_process(seven_val_images, out, capsys)
    assert images == 7
    assert single_acc == distributed_acc
