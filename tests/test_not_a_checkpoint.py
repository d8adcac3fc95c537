"""A file that is not a checkpoint (a README, a JPEG, an ONNX model, an empty file) given to main.py --resume,
tools/demo.py or --pretrained: our own one line naming the file and what it is, exit 2; no torch text, no advice to
load it unsafely."""
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from PIL import Image

import main
import models
from tools import demo
from training.checkpoints import checkpoint as ckpt


TINY = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--lr", "0.01", "--train-crop-size", "32", "-j", "0",
        "--num-classes", "3", "--device", "cpu", "--epochs", "1", "--steps-per-epoch", "1"]


def make_files(folder):
    """{path: what the error line calls it}."""
    readme = os.path.join(folder, "README.md")
    with open(readme, "w") as stream:
        stream.write("# ShuffleNetV2\n\nTrain with `python3 main.py`.\n")
    jpeg = os.path.join(folder, "cat.jpg")
    Image.new("RGB", (16, 16), (90, 60, 30)).save(jpeg, quality=90)
    onnx = os.path.join(folder, "shufflenet.onnx")
    with open(onnx, "wb") as stream:  # the head of a ModelProto: ir_version 7, producer "pytorch"
        stream.write(b"\x08\x07\x12\x07pytorch\x1a\x052.1.0")
    empty = os.path.join(folder, "empty.pth.tar")
    open(empty, "wb").close()
    return {readme: "a text file", jpeg: "a JPEG image", onnx: "an ONNX model: export_onnx.py's output, not its input",
            empty: "an empty file"}


def test_main_resume_names_what_the_file_is(tmp_path, capsys):
    for path, kind in make_files(str(tmp_path)).items():
        assert main.main(TINY + ["--resume", path, "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == ["error: --resume {}: not a PyTorch checkpoint ({})".format(path, kind)]
        assert "weights_only" not in err and "torch" not in err.replace("PyTorch", "")


def test_demo_and_pretrained_name_what_the_file_is(tmp_path):
    files = make_files(str(tmp_path))
    image = next(path for path in files if path.endswith(".jpg"))
    for path, kind in files.items():
        result = subprocess.run([sys.executable, "-m", "tools.demo", path, image],
                                capture_output=True, text=True, cwd=REPO_ROOT)
        assert result.returncode == 2
        assert result.stderr.splitlines() == ["error: {}: not a PyTorch checkpoint ({})".format(path, kind)]
        with pytest.raises(ValueError) as info:
            models.build_model("shufflenet_v2_x0_5", pretrained=path)
        assert str(info.value) == "cannot read weights file {}: not a PyTorch checkpoint ({})".format(path, kind)
    assert demo  # the tool imports without side effects


def test_a_cut_short_checkpoint_is_called_damaged(tmp_path):
    import torch
    path = str(tmp_path / "checkpoint.pth.tar")
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) // 2)
        stream.seek(0)
        container = "a zip archive" if stream.read(2) == b"PK" else "a pickle stream"  # torch < 1.6: legacy format
    assert ckpt.unreadable_reason(path) == ("damaged checkpoint ({} that torch.load cannot read: cut short or "
                                            "damaged)".format(container))
