"""tools/demo.py, tools/export_onnx.py, the shipped ImageNet class names, and the --help and
one-line errors of these two and tools/plot_log.py.

Models are x0.5 at a 64-pixel crop, so every forward pass and export stays small. Reference outputs come from
torchvision's own ShuffleNetV2, not from our model, so the tools are checked against an independent implementation.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from conftest import REPO_ROOT

from conftest import torch_version
from tests.datasets import make_image_folder
from tools import demo, export_onnx, plot_log
from training.checkpoints.checkpoint import atomic_save, build_checkpoint, torch_load
from training.data.decode import MEAN, STD
from training.data.loaders import load_val_image


CROP, RESIZE = 64, 72
CLASSES = ["class_0", "class_1", "class_2"]


def torchvision_net(num_classes, seed=0):
    """torchvision's x0.5 with a classifier that gives clearly different probabilities per class."""
    torch.manual_seed(seed)
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=num_classes).eval()
    with torch.no_grad():
        net.fc.weight.normal_(0.0, 0.5)
    return net


def reference_probabilities(net, path):
    """Softmax of torchvision's model on the image preprocessed by hand: (x / 255 - mean) / std."""
    image = load_val_image(path, RESIZE, CROP).float().div(255.0)
    image = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        return torch.softmax(net(image.unsqueeze(0)), dim=1)[0]


def parse_demo_output(text):
    """{image path: [(percent, name), ...]} from demo's printed lines."""
    results, current = {}, None
    for line in text.splitlines():
        if not line.startswith("  "):
            current = results.setdefault(line, [])
        else:
            rank, percent, name = line.strip().split(None, 2)
            assert rank == "{}.".format(len(current) + 1)
            current.append((float(percent.rstrip("%")), name))
    return results


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("images")), classes=3, train_per_class=1, val_per_class=2)


@pytest.fixture(scope="module")
def main_checkpoint(tmp_path_factory):
    """A main.py-style checkpoint of 3 classes whose model favours class 0 and whose EMA favours class 2."""
    net = torchvision_net(3)
    state = net.state_dict()
    ema = {k: v.clone() for k, v in state.items()}
    state["fc.bias"] = torch.tensor([40.0, 0.0, 0.0])
    ema["fc.bias"] = torch.tensor([0.0, 0.0, 40.0])
    path = str(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth.tar")
    atomic_save(build_checkpoint(5, "shufflenet_v2_x0_5", state, {}, 12.5, {"arch": "shufflenet_v2_x0_5"},
                                 classes=CLASSES, ema_state=ema, with_rng=False), path)
    return path


def test_shipped_imagenet_names_are_1000_sorted_wnids_in_torchvision_order():
    rows = [line.rstrip("\n").split("\t") for line in open(demo.IMAGENET_CLASSES, encoding="utf-8")]
    wnids = [row[0] for row in rows]
    assert len(rows) == 1000 and all(len(row) == 2 for row in rows)
    assert wnids == sorted(set(wnids)) and all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert rows[0] == ["n01440764", "tench"] and rows[999] == ["n15075141", "toilet tissue"]
    assert rows[281] == ["n02123045", "tabby"] and rows[134] == ["n02012849", "crane bird"]
    assert len({row[1] for row in rows}) == 1000  # unique names


@pytest.mark.smoke
def test_demo_on_torchvision_weights_matches_torchvision(tmp_path, images, capsys):
    net = torchvision_net(1000)
    weights = str(tmp_path / "shufflenetv2_x0.5.pth")
    torch.save(net.state_dict(), weights)  # a bare state_dict, as torchvision publishes
    folder = os.path.join(images, "val", "class_1")
    assert demo.main([weights, folder, "--crop-size", str(CROP), "--resize-size", str(RESIZE)]) == 0
    results = parse_demo_output(capsys.readouterr().out)
    names = [line.rstrip("\n").split("\t")[1] for line in open(demo.IMAGENET_CLASSES, encoding="utf-8")]
    assert sorted(results) == sorted(os.path.join(folder, n) for n in os.listdir(folder))
    for path, top in results.items():
        expected = reference_probabilities(net, path)
        values, indices = expected.topk(5)
        assert [name for _, name in top] == [names[i] for i in indices.tolist()]
        assert [p for p, _ in top] == pytest.approx((100.0 * values).tolist(), abs=0.006)
        assert [p for p, _ in top] == sorted((p for p, _ in top), reverse=True)


def test_demo_names_come_from_the_checkpoint_and_ema_is_selectable(images, main_checkpoint, capsys):
    image = os.path.join(images, "val", "class_0", "val_0.jpg")
    common = [main_checkpoint, image, "--crop-size", str(CROP), "--resize-size", str(RESIZE)]
    demo.main(common)
    top = parse_demo_output(capsys.readouterr().out)[image]
    assert len(top) == 3 and top[0] == (100.0, "class_0")  # topk capped at the 3 classes
    demo.main(common + ["--ema", "--topk", "1"])
    assert parse_demo_output(capsys.readouterr().out)[image] == [(100.0, "class_2")]


def test_demo_class_names_from_a_data_folder_or_file(tmp_path, images, main_checkpoint):
    meta = {"classes": ["n01440764", "n01443537", "x"]}
    assert demo.class_names(3, {}, images) == CLASSES  # root with train/
    assert demo.class_names(3, {}, os.path.join(images, "train")) == CLASSES
    assert demo.class_names(3, meta) == ["tench (n01440764)", "goldfish (n01443537)", "x"]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\nbird\n")
    assert demo.class_names(3, meta, str(names)) == ["cat", "dog", "bird"]
    assert demo.class_names(2, {}) == ["class 0", "class 1"]
    with pytest.raises(demo.UserError, match="names 3 classes but the model has 5"):
        demo.class_names(5, {}, images)


def test_demo_bad_inputs_are_one_line_errors(tmp_path, images, main_checkpoint):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    not_checkpoint = tmp_path / "model.pth"
    not_checkpoint.write_bytes(b"\x00garbage" * 10)
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, str(foreign))
    cases = [
        ([str(tmp_path / "missing.pth"), images], "checkpoint not found"),
        ([str(not_checkpoint), images], "not a PyTorch checkpoint"),
        ([str(foreign), images], "no ShuffleNetV2 weights"),
        ([main_checkpoint, str(tmp_path / "missing.jpg")], "no such image file or folder"),
        ([main_checkpoint, str(not_image)], "unreadable image"),
        ([main_checkpoint, str(tmp_path / "empty")], "no image files in folder"),
        ([main_checkpoint, images, "--arch", "shufflenet_v2_x1_0"], "does not fit"),
        ([main_checkpoint, images, "--device", "cpu:x"], "the device index must be a number"),
    ]
    for argv, message in cases:
        with pytest.raises(demo.UserError, match=message):
            demo.main(argv + ["--crop-size", str(CROP), "--resize-size", str(RESIZE)])
    plain = str(tmp_path / "plain.pth")
    torch.save(torchvision_net(3).state_dict(), plain)
    with pytest.raises(demo.UserError, match="no EMA weights"):
        demo.main([plain, images, "--ema"])


def onnx_outputs(path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs.numpy()})[0]


@pytest.mark.smoke
def test_export_onnx_matches_torchvision_for_two_batch_sizes(tmp_path, main_checkpoint, capsys):
    import onnx

    output = str(tmp_path / "model.onnx")
    assert export_onnx.main([main_checkpoint, output, "--crop-size", str(CROP)]) == 0
    assert "onnxruntime matches torch" in capsys.readouterr().out
    proto = onnx.load(output)
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [11]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, CROP, CROP]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == "shufflenet_v2_x0_5" and json.loads(meta["classes"]) == CLASSES
    ops = {node.op_type for node in proto.graph.node}
    assert "Gather" in ops and "Transpose" not in ops  # the index_select shuffle; BN folded into Conv
    assert "BatchNormalization" not in ops

    state = torch_load(main_checkpoint)["state_dict"]
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3).eval()
    net.load_state_dict(state)
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 5):
        inputs = torch.randn(batch, 3, CROP, CROP, generator=generator)
        with torch.no_grad():
            expected = net(inputs).numpy()
        actual = onnx_outputs(output, inputs)
        assert actual.shape == (batch, 3)
        assert np.abs(actual - expected).max() < 1e-4


def test_export_opset_13_of_the_ema_weights_with_the_transpose_shuffle(tmp_path, main_checkpoint, monkeypatch,
                                                                         capsys):
    import onnx

    # the form older exporters get (torch < 2.1 cannot inline the index_select shuffle's autograd Function)
    monkeypatch.setattr(export_onnx, "shuffle_impl_for_export", lambda: "transpose")
    output = str(tmp_path / "ema.onnx")
    export_onnx.main([main_checkpoint, output, "--crop-size", str(CROP), "--opset", "13", "--ema"])
    printed = capsys.readouterr().out
    assert "channel shuffle: transpose" in printed and "onnxruntime matches torch" in printed
    proto = onnx.load(output)
    written = 13 if torch_version() >= (1, 8) else 11  # torch 1.5-1.7 export up to opset 12: the default, said once
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [written]
    note = "note: ONNX opset 13 needs torch >= 1.8 (this is torch {}): writing opset 11 (the default)".format(
        torch.__version__)
    assert [line for line in printed.splitlines() if line.startswith("note:")] == ([note] if written != 13 else [])
    logits = onnx_outputs(output, torch.zeros(2, 3, CROP, CROP))
    assert logits.shape == (2, 3) and (logits.argmax(axis=1) == 2).all()  # the EMA's classifier favours class 2


def test_interrupted_export_keeps_the_old_file(tmp_path, main_checkpoint, monkeypatch):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"previous export")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx.main([main_checkpoint, str(output), "--crop-size", str(CROP)])
    assert output.read_bytes() == b"previous export"
    assert os.listdir(str(tmp_path)) == ["model.onnx"]  # no temporary file left behind
    with pytest.raises(export_onnx.UserError, match="is a folder"):
        export_onnx.main([main_checkpoint, str(tmp_path)])
    with pytest.raises(export_onnx.UserError, match="output folder does not exist"):
        export_onnx.main([main_checkpoint, str(tmp_path / "no" / "x.onnx")])


@pytest.mark.parametrize("tool", [demo, export_onnx, plot_log])
def test_tools_have_help(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["demo.py", "export_onnx.py", "plot_log.py"])
def test_tools_print_one_line_errors_and_exit_2(tool, tmp_path):
    missing = str(tmp_path / "missing.pth")
    arguments = {"demo.py": [missing, str(tmp_path)], "export_onnx.py": [missing, str(tmp_path / "m.onnx")],
                 "plot_log.py": [missing]}[tool]
    module = "tools." + tool[:-len(".py")]  # how the README runs tools: python3 -m tools.NAME from the repo root
    failed = subprocess.run([sys.executable, "-m", module] + arguments, capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and len(failed.stderr.strip().splitlines()) == 1
    assert "not found" in failed.stderr and "Traceback" not in failed.stderr
