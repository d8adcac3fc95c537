"""Several nodes on one machine: two "nodes" of one CPU process each meet at 127.0.0.1, started the three ways the
README shows: torchrun --nnodes 2 --node_rank K, main.py --multiprocessing-distributed --world-size 2 --rank K, and
the 8p launcher's --nnodes=2 --node_rank=K. Training finishes on both, node 0 alone writes the checkpoint (and the
launcher's summary), and the Acc@1 of the distributed evaluation equals a one-process --evaluate of that checkpoint
on the same held-out images."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, requires_torch

from training.checkpoints import checkpoint as ckpt
from training.launch import modes

pytestmark = pytest.mark.slow

TIMEOUT = 300
# data_root's shape (conftest.py): 15 held-out images, the two nodes score 8 and 7 of them
IMAGE_FOLDER = dict(classes=3, train_per_class=8, val_per_class=5, size=(40, 40))
TINY = ["-a", "shufflenet_v2_x0_5", "--train-crop-size", "32", "--val-resize-size", "32", "--val-crop-size", "32",
        "--device", "cpu", "-j", "0", "--seed", "0", "--lr", "0.1", "-p", "1"]
TRAIN = TINY + ["-b", "4", "--epochs", "1", "--steps-per-epoch", "3"]
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "TORCHELASTIC_USE_AGENT_STORE", "OMP_NUM_THREADS")


def clean_environment(**extra):
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def run_nodes(commands, env=None):
    """Start one command per node at once, wait for all; returns their CompletedProcess-like results."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  cwd=REPO_ROOT, env=env or clean_environment()) for command in commands]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for node, result in enumerate(results):
        assert result.returncode == 0, "node {}:\n{}\n{}".format(node, result.stdout[-3000:], result.stderr[-3000:])
    return results


def last_eval(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as stream:
        records = [json.loads(line) for line in stream if line.strip()]
    return [record for record in records if record["kind"] == "eval"][-1]


def evaluate_alone(checkpoint, data_root, output_dir):
    """Acc@1 (and the image count) of a one-process --evaluate of `checkpoint`."""
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", data_root, "--evaluate",
                    "--resume", checkpoint, "-b", "4", "--output-dir", output_dir] + TINY,
                   check=True, cwd=REPO_ROOT, env=clean_environment(), stdout=subprocess.DEVNULL, timeout=TIMEOUT)
    record = last_eval(output_dir)
    return record["acc1"], record["images"]


def check_node_0_saved_and_scored(outputs, data_root, tmp_path):
    """Node 0 wrote the checkpoint and metrics, node 1 nothing; the distributed score is the one-process score."""
    node0, node1 = outputs
    checkpoint = os.path.join(node0, "checkpoint.pth.tar")
    assert ckpt.load_checkpoint(checkpoint)["epoch"] == 1
    assert not [name for name in os.listdir(node1) if name.endswith(".pth.tar") or name == "metrics.jsonl"]
    distributed = last_eval(node0)
    alone = evaluate_alone(checkpoint, data_root, str(tmp_path / "alone"))
    assert (distributed["acc1"], distributed["images"]) == alone == (alone[0], 15)
    return distributed["acc1"]


def node_outputs(tmp_path):
    outputs = [str(tmp_path / "node{}".format(node)) for node in (0, 1)]
    for output in outputs:
        os.makedirs(output)
    return outputs


@requires_torch("1.9", "torchrun (torch.distributed.run)")
def test_two_torchrun_nodes(data_root, tmp_path):
    port, outputs = modes.free_port(), node_outputs(tmp_path)
    run_nodes([[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                os.path.join(REPO_ROOT, "main.py"), "--data", data_root, "--output-dir", outputs[node]] + TRAIN
               for node in (0, 1)])
    check_node_0_saved_and_scored(outputs, data_root, tmp_path)


def test_two_main_py_nodes(data_root, tmp_path):
    port, outputs = modes.free_port(), node_outputs(tmp_path)
    run_nodes([[sys.executable, os.path.join(REPO_ROOT, "main.py"), "--multiprocessing-distributed",
                "--device_num", "1", "--world-size", "2", "--rank", str(node), "--addr", "127.0.0.1", "--port",
                str(port), "--data", data_root, "--output-dir", outputs[node]] + TRAIN for node in (0, 1)])
    check_node_0_saved_and_scored(outputs, data_root, tmp_path)


def test_two_launcher_nodes(data_root, tmp_path):
    roots = [str(tmp_path / "root{}".format(node)) for node in (0, 1)]
    env = clean_environment(MASTER_PORT=str(modes.free_port()), PYTHON=sys.executable)
    env.pop("OMP_NUM_THREADS")
    results = run_nodes([["bash", os.path.join(REPO_ROOT, "test", "train_full_8p.sh"), "--data_path=" + data_root,
                          "--output_root=" + roots[node], "--nproc=1", "--nnodes=2", "--node_rank=" + str(node),
                          "--master_addr=127.0.0.1", "--device=cpu", "--epochs=1", "--batch_size=4",
                          "--learning_rate=0.1", "--precision_mode=must_keep_origin_dtype",
                          "--arch=shufflenet_v2_x0_5", "--train-crop-size=32", "--val-resize-size=32",
                          "--val-crop-size=32", "--workers=0", "--steps-per-epoch=3", "--print-freq=1"]
                         for node in (0, 1)], env=env)
    assert "node 1 finished; the figures and the summary are on node 0" in results[1].stdout
    acc1 = check_node_0_saved_and_scored([os.path.join(root, "0") for root in roots], data_root, tmp_path)
    summaries = [name for name in os.listdir(os.path.join(roots[0], "0")) if name.endswith("_acc.log")]
    assert summaries == ["Shufflenetv2_ID0099_for_PyTorch_bs4_2p_acc.log"]
    assert "Final Train Accuracy : {:.3f}".format(acc1) in results[0].stdout
    assert not [name for name in os.listdir(os.path.join(roots[1], "0")) if name.endswith("_acc.log")]
