"""Checkpoints carry a SHA-256 digest of their contents (training/checkpoints/digest.py), checked on every load:
bytes flipped inside a stored tensor, or a changed field, make the file "damaged" for main.py --resume / --evaluate,
tools/demo.py, tools/export_onnx.py and --pretrained; a file written before digests loads with a one-line note."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import REPO_ROOT

import main
import models
from training.checkpoints import checkpoint as ckpt
from training.checkpoints import digest
from tests.datasets import make_image_folder
from tools import demo, export_onnx
from training.errors import UserError


pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = "shufflenet_v2_x0_5"
TINY = ["--dummy", "-a", ARCH, "-b", "4", "--lr", "0.01", "--train-crop-size", "32", "-j", "0", "--num-classes", "3",
        "--device", "cpu", "--seed", "1", "--steps-per-epoch", "2", "--val-resize-size", "32", "--val-crop-size",
        "32"]


def flip_bytes_inside(path, tensor, count=200):
    """Invert `count` bytes in the middle of the stored elements of `tensor` in the file at `path` (its size
    unchanged), as a failing disk or a bad copy would."""
    with open(path, "rb") as stream:
        content = bytearray(stream.read())
    stored = tensor.contiguous().numpy().tobytes()
    start = content.find(stored)
    assert start >= 0 and len(stored) > count
    middle = start + (len(stored) - count) // 2
    content[middle:middle + count] = bytes(255 - b for b in content[middle:middle + count])
    with open(path, "wb") as stream:
        stream.write(content)


def small_checkpoint():
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return ckpt.build_checkpoint(2, ARCH, model.state_dict(), optimizer.state_dict(), 10.0,
                                 {"arch": ARCH, "sizes": (1, 2)}, classes=["a", "b", "c"], amp_state={"scale": 64.0},
                                 ema_state=model.state_dict())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A main.py checkpoint after one epoch."""
    out = str(tmp_path_factory.mktemp("digest") / "run")
    assert main.main(TINY + ["--epochs", "1", "--output-dir", out]) == 0
    return os.path.join(out, "checkpoint.pth.tar")


@pytest.fixture
def damaged(trained, tmp_path):
    path = str(tmp_path / "damaged.pth.tar")
    with open(trained, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    flip_bytes_inside(path, ckpt.torch_load(trained)["state_dict"]["conv5.0.weight"])
    return path


def test_a_saved_checkpoint_carries_a_digest_and_stays_torchvision_loadable(tmp_path):
    path = str(tmp_path / "checkpoint.pth.tar")
    ckpt.atomic_save(small_checkpoint(), path)
    loaded = ckpt.torch_load(path)  # weights_only=True / the restricted unpickler
    assert loaded[digest.DIGEST_KEY].startswith("sha256:") and len(loaded[digest.DIGEST_KEY]) == 7 + 64
    assert digest.check(loaded) == "ok"
    torchvision.models.shufflenet_v2_x0_5(num_classes=3).load_state_dict(loaded["state_dict"])
    assert digest.DIGEST_KEY not in ckpt.load_model_weights(path)[1]  # not part of the meta the tools read


@pytest.mark.parametrize("fmt", ["zipfile", "legacy"])
def test_flipped_bytes_inside_a_tensor_are_reported_as_damage(tmp_path, fmt):
    data = small_checkpoint()
    path = str(tmp_path / "checkpoint.pth.tar")
    torch.save(data, path, _use_new_zipfile_serialization=(fmt == "zipfile"))
    assert ckpt.load_checkpoint(path)["epoch"] == 2
    buffers = [state["momentum_buffer"] for state in data["optimizer"]["state"].values()]
    flip_bytes_inside(path, max(buffers, key=lambda t: t.numel()))  # the optimizer's part of the file
    with pytest.raises(UserError) as info:
        ckpt.load_checkpoint(path, "--resume")
    assert str(info.value) == ("--resume {}: damaged checkpoint (its contents do not match the sha256 digest stored "
                               "in it: changed on disk after it was written)".format(path))


def test_every_part_is_covered():
    data = small_checkpoint()
    assert digest.check(data) == "ok"
    changes = [lambda d: d.update(epoch=3), lambda d: d.update(best_acc1=10.5), lambda d: d["args"].update(lr=1),
               lambda d: d["classes"].reverse(), lambda d: d["optimizer"]["param_groups"][0].update(lr=0.2),
               lambda d: d["state_dict"]["fc.bias"].add_(1e-6), lambda d: d["model_ema"].pop("fc.bias"),
               lambda d: d.update(digest="sha256:" + "0" * 64), lambda d: d.update(digest=None)]
    for change in changes:
        copy = clone(data)
        change(copy)
        assert digest.check(copy) in ("mismatch", "missing")
    assert digest.check(clone(data)) == "ok"


def clone(value):
    """A deep copy through torch.save / torch.load, as a file gives it back."""
    import io
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def test_bfloat16_and_non_contiguous_tensors_are_hashed_by_value():
    weights = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    plain = {"state_dict": {"w": weights.t().contiguous(), "b": weights.to(torch.bfloat16)}}
    strided = {"state_dict": {"w": weights.t(), "b": weights.to(torch.bfloat16)}}
    assert digest.compute(plain) == digest.compute(strided)
    strided["state_dict"]["b"][0, 0] = 1
    assert digest.compute(plain) != digest.compute(strided)


@pytest.mark.parametrize("how", ["resume", "evaluate", "check-only"])
def test_main_resume_and_evaluate_refuse_a_damaged_checkpoint(damaged, tmp_path, capsys, how):
    line = ("error: --resume {}: damaged checkpoint (its contents do not match the sha256 digest stored in it: "
            "changed on disk after it was written)".format(damaged))
    argv = TINY + (["--check-only"] if how == "check-only" else [])
    if how == "evaluate":
        data = make_image_folder(str(tmp_path / "data"), classes=3, train_per_class=2, val_per_class=1, size=(36, 36))
        argv = [flag for flag in TINY if flag != "--dummy"] + ["--data", data, "--evaluate"]
    capsys.readouterr()
    code = main.main(argv + ["--epochs", "2", "--resume", damaged, "--output-dir", str(tmp_path / "out")])
    assert code == 2 and capsys.readouterr().err.splitlines() == [line]


def test_tools_refuse_a_damaged_checkpoint(damaged, tmp_path):
    image = tmp_path / "image.jpg"
    from PIL import Image
    Image.new("RGB", (40, 40), (200, 10, 10)).save(str(image))
    expected = "{}: damaged checkpoint (its contents do not match the sha256 digest stored in it".format(damaged)
    with pytest.raises(UserError, match="^" + expected.replace("(", r"\(")):
        demo.main([damaged, str(image)])
    with pytest.raises(UserError, match="^" + expected.replace("(", r"\(")):
        export_onnx.main([damaged, str(tmp_path / "model.onnx"), "--no-check"])
    with pytest.raises(ValueError) as info:
        models.build_model(ARCH, num_classes=3, pretrained=damaged)
    assert str(info.value).startswith("cannot use weights file " + expected)


def test_a_checkpoint_without_digest_loads_with_a_note(trained, tmp_path, capsys):
    """As written before digests: the same checkpoint with its digest removed."""
    old = str(tmp_path / "old.pth.tar")
    saved = ckpt.torch_load(trained)
    del saved[digest.DIGEST_KEY]
    torch.save(saved, old)
    note = ("note: {} has no content digest (written before checkpoints carried one): loaded, but damage to it "
            "cannot be detected".format(old))
    capsys.readouterr()
    assert main.main(TINY + ["--epochs", "2", "--resume", old, "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out.count(note) == 1 and "=> resumed from {} at epoch 1 (best Acc@1 0.000)".format(old) in out
    result = subprocess.run([sys.executable, "-m", "tools.export_onnx", old,
                             str(tmp_path / "old.onnx"), "--no-check"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0 and result.stderr.splitlines() == [note], result.stderr
