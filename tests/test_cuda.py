"""The CUDA paths, on a CUDA GPU (skipped elsewhere; tools/accelerator_check.py runs this file on a GPU box):
fp16 AMP + GradScaler, bf16 autocast, channels_last, --compile, EMA, a CUDA checkpoint loaded on the CPU with
weights_only, exact resume, --evaluate, demo and ONNX export of a CUDA-trained checkpoint, the two channel shuffle
implementations, and the DALI path with the GPU decoder.

Exact resume on CUDA: torch promises bit-identical results only with deterministic algorithms (cuDNN deterministic,
`torch.use_deterministic_algorithms`, `CUBLAS_WORKSPACE_CONFIG=:4096:8`, the same GPU and library versions), so the
resume test runs both runs that way, in fresh processes; a default run (cuDNN free to pick non-deterministic
kernels) may differ in the last bits.
"""
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

import main
import models
from models.channel_shuffle import ChannelShuffle
from tests.datasets import make_image_folder
from training.checkpoints.checkpoint import torch_load
from training.checkpoints.pretrained import load_model

from tools import demo, export_onnx

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"), pytest.mark.cuda]

TINY = ["-a", "shufflenet_v2_x0_5", "-j", "0", "--train-crop-size", "32", "--val-resize-size", "36",
        "--val-crop-size", "32", "-b", "8", "--lr", "0.05", "--momentum", "0.9", "--seed", "5", "-p", "100",
        "--device", "cuda", "--eval-freq", "1", "--epochs", "2", "--steps-per-epoch", "2", "--checkpoint-freq", "1"]
# main.py in a fresh process with torch's deterministic settings (warn_only: torch >= 1.11; older torch raises on
# an operation without a deterministic kernel, which then names it)
DETERMINISTIC = "\n".join([
    "import sys",
    "import training, torch",  # training first: its bootstrap prepares the torch import
    "torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False",
    "try:\n    torch.use_deterministic_algorithms(True, warn_only=True)",
    "except TypeError:\n    torch.use_deterministic_algorithms(True)",
    "import main",
    "sys.exit(main.main(sys.argv[1:]))"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("cuda") / "data"), classes=3, train_per_class=8,
                             val_per_class=2, size=(48, 40))


@pytest.fixture(scope="module")
def cuda_run(data_root, tmp_path_factory):
    """One CUDA training run with fp16 AMP (GradScaler or apex), channels_last and EMA: its output folder."""
    out = str(tmp_path_factory.mktemp("cuda_run"))
    assert main.main(TINY + ["--data", data_root, "--amp", "--channels-last", "--model-ema", "0.9",
                             "--output-dir", out]) == 0
    return out


def records(folder, kind):
    with open(os.path.join(folder, "metrics.jsonl")) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row for row in rows if row.get("kind") == kind]


def test_fp16_amp_with_loss_scaling_channels_last_and_ema_train_on_cuda(cuda_run):
    epochs = records(cuda_run, "epoch")
    assert [row["epoch"] for row in epochs] == [0, 1]
    assert all(row["loss"] == row["loss"] and row["fps"] > 0 for row in epochs)  # finite losses, a speed
    assert sorted(row["ema"] for row in records(cuda_run, "eval") if row["epoch"] == 1) == [False, True]
    saved = torch_load(os.path.join(cuda_run, "checkpoint.pth.tar"))
    assert saved.get("amp"), "no loss-scaler (or apex) state saved: fp16 AMP did not run"
    assert saved["model_ema"] is not None


def test_bf16_autocast_steps_on_cuda():
    if not hasattr(torch, "autocast"):
        pytest.skip("torch.autocast came with torch 1.10 (this is torch {})".format(torch.__version__))
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    torch.manual_seed(0)
    model = models.build_model("shufflenet_v2_x0_5", num_classes=10).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 10, (8,), device="cuda")
    before = model.fc.weight.detach().clone()
    losses = []
    for _ in range(3):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            output = model(images)
            assert output.dtype == torch.bfloat16
            loss = torch.nn.functional.cross_entropy(output, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(value == value for value in losses) and losses[-1] < losses[0]
    assert not torch.equal(before, model.fc.weight.detach())


def test_compile_amp_run_on_cuda(data_root, tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile came with torch 2.0 (this is torch {})".format(torch.__version__))
    out = str(tmp_path / "compiled")
    argv = TINY + ["--data", data_root, "--amp", "--channels-last", "--compile", "--epochs", "1",
                   "--output-dir", out]
    assert main.main(argv) == 0
    saved = torch_load(os.path.join(out, "checkpoint.pth.tar"))
    assert not any("_orig_mod" in name for name in saved["state_dict"])


def test_cuda_checkpoint_loads_on_a_cpu_with_weights_only(cuda_run):
    path = os.path.join(cuda_run, "checkpoint.pth.tar")
    kwargs = {"weights_only": True} if "weights_only" in inspect.signature(torch.load).parameters else {}
    saved = torch.load(path, map_location="cpu", **kwargs)
    tensors = list(saved["state_dict"].values()) + list(saved["model_ema"].values())
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    model, meta = load_model(path)
    assert meta["arch"] == "shufflenet_v2_x0_5" and next(model.parameters()).device.type == "cpu"


def test_exact_resume_on_cuda_with_deterministic_algorithms(data_root, tmp_path):
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    argv = TINY + ["--data", data_root, "--amp", "--epochs", "3"]
    command = [sys.executable, "-c", DETERMINISTIC]
    subprocess.run(command + argv + ["--output-dir", full], env=env, check=True, cwd=REPO_ROOT)
    subprocess.run(command + argv + ["--output-dir", resumed, "--resume",
                                     os.path.join(full, "checkpoint_epoch1.pth.tar")], env=env, check=True,
                   cwd=REPO_ROOT)
    a = torch_load(os.path.join(full, "checkpoint.pth.tar"))
    b = torch_load(os.path.join(resumed, "checkpoint.pth.tar"))
    assert a["epoch"] == b["epoch"] == 3
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, different[:5]


def test_evaluate_a_cuda_checkpoint_on_cuda_gives_the_runs_accuracy(cuda_run, data_root, tmp_path):
    out = str(tmp_path / "evaluate")
    assert main.main(["--data", data_root, "--evaluate", "--resume", os.path.join(cuda_run, "checkpoint.pth.tar"),
                      "--device", "cuda", "-b", "8", "-j", "0", "--val-resize-size", "36", "--val-crop-size", "32",
                      "-a", "shufflenet_v2_x0_5", "--amp", "--output-dir", out]) == 0
    trained = [row for row in records(cuda_run, "eval") if row["epoch"] == 1 and not row["ema"]][0]
    evaluated = [row for row in records(out, "eval") if not row["ema"]][0]
    assert evaluated["images"] == trained["images"] == 6
    assert evaluated["acc1"] == pytest.approx(trained["acc1"])


def test_demo_and_onnx_export_of_a_cuda_checkpoint(cuda_run, data_root, tmp_path, capsys):
    path = os.path.join(cuda_run, "checkpoint.pth.tar")
    images = os.path.join(data_root, "val")
    assert demo.main([path, images, "--device", "cuda"]) == 0
    assert "class_" in capsys.readouterr().out
    model, _ = load_model(path)
    paths = demo.expand_images([images])
    on_cpu = list(demo.predict(model, paths, torch.device("cpu"), resize_size=36, crop_size=32))
    on_gpu = list(demo.predict(model.cuda(), paths, torch.device("cuda"), resize_size=36, crop_size=32))
    for (_, cpu_top), (_, gpu_top) in zip(on_cpu, on_gpu):
        assert [index for _, index in cpu_top[:1]] == [index for _, index in gpu_top[:1]]
        assert cpu_top[0][0] == pytest.approx(gpu_top[0][0], abs=1e-3)
    onnx_file = str(tmp_path / "model.onnx")
    assert export_onnx.main([path, onnx_file]) == 0
    assert os.path.getsize(onnx_file) > 0


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shuffle_implementations_agree_on_cuda(channels_last, dtype):
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x1 = torch.randn(4, 58, 14, 14, device="cuda", dtype=dtype).contiguous(memory_format=layout)
    x2 = torch.randn(4, 58, 14, 14, device="cuda", dtype=dtype).contiguous(memory_format=layout)
    results = {}
    for impl in ("transpose", "index_select"):
        for split in (True, False):
            a, b = x1.clone().requires_grad_(), x2.clone().requires_grad_()
            out = ChannelShuffle(116, split_shuffle=split, impl=impl).cuda()((a, b))
            outs = out if split else (out,)
            sum(o.float().mul(torch.arange(o.numel(), device="cuda").view_as(o).float().sin()).sum()
                for o in outs).backward()
            results[impl, split] = ([o.detach() for o in outs], a.grad, b.grad)
    for split in (True, False):
        for mine, theirs in zip(results["transpose", split][0], results["index_select", split][0]):
            assert torch.equal(mine, theirs)
        assert torch.equal(results["transpose", split][1], results["index_select", split][1])
        assert torch.equal(results["transpose", split][2], results["index_select", split][2])


def test_whole_model_is_the_same_with_either_shuffle_on_cuda():
    torch.manual_seed(0)
    transpose = models.build_model("shufflenet_v2_x0_5", num_classes=10, shuffle_impl="transpose").cuda()
    index_select = models.build_model("shufflenet_v2_x0_5", num_classes=10, shuffle_impl="index_select").cuda()
    index_select.load_state_dict(transpose.state_dict())
    images = torch.randn(4, 3, 64, 64, device="cuda")
    outputs = [model.eval()(images) for model in (transpose, index_select)]
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


def test_dali_gpu_decoder_matches_the_cpu_pipeline(data_root):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    import numpy as np

    from training.data import dali

    train_dir = os.path.join(data_root, "train")
    batches = {}
    for device in ("cpu", "cuda"):
        loader, sampler = dali.build_train_loader(train_dir, 8, 2, device=torch.device(device), crop_size=32, seed=3)
        sampler.set_epoch(1)
        batches[device] = [(images.cpu(), targets) for images, targets, _ in loader]
        assert all(images.device.type == device for images, _, _ in loader)
    for (cpu_images, cpu_targets), (gpu_images, gpu_targets) in zip(batches["cpu"], batches["cuda"]):
        assert torch.equal(cpu_targets, gpu_targets)
        difference = cpu_images.double() - gpu_images.double()
        psnr = 10 * np.log10(255.0 ** 2 / max(float(difference.pow(2).mean()), 1e-12))
        assert psnr >= 35.0, psnr  # nvJPEG vs libjpeg-turbo: rounding differences only


def test_main_trains_with_dali_on_cuda(data_root, tmp_path):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    out = str(tmp_path / "dali")
    assert main.main(TINY + ["--data", data_root, "--data-backend", "dali", "--amp", "--channels-last",
                             "--epochs", "1", "--output-dir", out]) == 0
    assert records(out, "epoch")[0]["fps"] > 0
