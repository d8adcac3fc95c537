"""training/checkpoints/pretrained.py and the two tools built on it: tools/demo.py and tools/export_onnx.py read the
image sizes
a checkpoint was trained at (flags still override), the ONNX check is relative + absolute, and a diverged model
(NaN/inf weights) is not exported."""
import json
import os

import pytest
import torch
import torchvision

from tests.datasets import make_image_folder
from tools import demo, export_onnx
from training.checkpoints import pretrained
from training.checkpoints.checkpoint import atomic_save, build_checkpoint
from training.data.decode import MEAN, STD
from training.data.loaders import load_val_image
from training.errors import UserError


TRAIN_CROP, RESIZE, CROP = 40, 44, 40  # not 224/256, so a tool that ignores the checkpoint's sizes differs
ARCH = "shufflenet_v2_x0_5"


def torchvision_net(seed=0, fc_std=0.5):
    """torchvision's x0.5, untrained but for its classifier (a large fc_std makes the image size visible in the
    probabilities: an untrained body's features differ little between images)."""
    torch.manual_seed(seed)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3).eval()
    with torch.no_grad():
        net.fc.weight.normal_(0.0, fc_std)
    return net


def save_checkpoint(path, state, args):
    atomic_save(build_checkpoint(1, ARCH, state, {}, 0.0, dict(args, arch=ARCH), classes=["a", "b", "c"],
                                 with_rng=False), str(path))
    return str(path)


SIZES = {"train_crop_size": TRAIN_CROP, "val_resize_size": RESIZE, "val_crop_size": CROP}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), classes=3, train_per_class=1, val_per_class=1)


def expected_percentages(net, path, resize, crop):
    image = load_val_image(path, resize, crop).float().div(255.0)
    image = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        return (100.0 * torch.softmax(net(image.unsqueeze(0)), dim=1)[0]).tolist()


def demo_percentages(text):
    """{name: percent} of the first image demo printed."""
    lines = text.splitlines()
    result = {}
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        _, percent, name = line.strip().split(None, 2)
        result[name] = float(percent.rstrip("%"))
    return result


def test_image_sizes_come_from_the_checkpoint_and_flags_override():
    meta = {"args": dict(SIZES)}
    assert pretrained.image_sizes(meta) == SIZES
    assert pretrained.image_sizes(meta, val_crop_size=64) == dict(SIZES, val_crop_size=64)
    assert pretrained.image_sizes({}) == {"train_crop_size": 224, "val_resize_size": 256, "val_crop_size": 224}
    assert pretrained.image_sizes({}, val_crop_size=112)["val_resize_size"] == 128  # 256/224 of the crop


def test_demo_uses_the_checkpoint_sizes_unless_overridden(tmp_path, images, capsys):
    net = torchvision_net(fc_std=1000.0)
    checkpoint = save_checkpoint(tmp_path / "sized.pth.tar", net.state_dict(), SIZES)
    image = os.path.join(images, "val", "class_1", sorted(os.listdir(os.path.join(images, "val", "class_1")))[0])
    at_imagenet_sizes = expected_percentages(net, image, 256, 224)
    assert max(abs(a - b) for a, b in zip(expected_percentages(net, image, RESIZE, CROP), at_imagenet_sizes)) > 0.5
    for flags, (resize, crop) in (([], (RESIZE, CROP)), (["--resize-size", "80", "--crop-size", "64"], (80, 64))):
        assert demo.main([checkpoint, image] + flags) == 0
        shown = demo_percentages(capsys.readouterr().out)
        expected = dict(zip(["a", "b", "c"], expected_percentages(net, image, resize, crop)))
        assert set(shown) == set(expected)
        for name, percent in shown.items():
            assert percent == pytest.approx(expected[name], abs=0.006)  # printed with 2 decimals
    for flags in (["--resize-size", "30"], ["--crop-size", "0"]):
        with pytest.raises(UserError, match="--resize-size must be >= --crop-size >= 1"):
            demo.main([checkpoint, image] + flags)


def test_export_uses_the_checkpoint_crop(tmp_path):
    import onnx

    checkpoint = save_checkpoint(tmp_path / "sized.pth.tar", torchvision_net().state_dict(), SIZES)
    output = str(tmp_path / "model.onnx")
    assert export_onnx.main([checkpoint, output, "--no-check"]) == 0
    proto = onnx.load(output)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, CROP, CROP]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "resize shorter side to {}, center crop {c}x{c}".format(RESIZE, c=CROP) in meta["preprocessing"]
    assert json.loads(meta["classes"]) == ["a", "b", "c"]
    assert export_onnx.main([checkpoint, output, "--no-check", "--crop-size", "64"]) == 0
    assert [d.dim_value for d in onnx.load(output).graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 64, 64]
    with pytest.raises(UserError, match="--crop-size must be at least 32"):
        export_onnx.main([checkpoint, output, "--crop-size", "16"])


def test_export_check_is_relative_for_huge_logits(tmp_path, capsys):
    """Logits near 1e12: float32 rounding alone differs by far more than any absolute tolerance, yet the export
    is exact to float32 precision; the check must pass (and an absolute-only check must still refuse it)."""
    state = torchvision_net().state_dict()
    state["fc.weight"] = state["fc.weight"] * 1e12
    checkpoint = save_checkpoint(tmp_path / "huge.pth.tar", state, SIZES)
    output = str(tmp_path / "huge.onnx")
    assert export_onnx.main([checkpoint, output]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime matches torch" in printed
    difference = float(printed.split("max |difference| ", 1)[1].split()[0])
    assert difference > 1e-4  # what the old absolute-only check refused
    relative = float(printed.split("max |difference| ", 1)[1].split(" = ", 1)[1].split()[0])
    assert relative < 1e-5  # the printed figure says what matters: exact to float32 precision
    assert "of the largest |logit| (" in printed
    with pytest.raises(UserError, match="onnxruntime differs from torch"):
        export_onnx.main([checkpoint, output, "--rtol", "0", "--tolerance", "1e-4"])


def test_export_refuses_non_finite_weights(tmp_path):
    state = torchvision_net().state_dict()
    state["conv5.0.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"][1] = float("inf")
    checkpoint = save_checkpoint(tmp_path / "diverged.pth.tar", state, SIZES)
    output = tmp_path / "diverged.onnx"
    with pytest.raises(UserError, match=r"non-finite weights \(NaN or inf\) in 2 tensor\(s\), first conv5.0.weight"):
        export_onnx.main([checkpoint, str(output)])
    assert not output.exists()
