"""training/compat.py: each capability that older torch lacks, and the code paths that stand in for it, exercised on
every lane (the torch 1.5 lane takes the stand-ins for real; newer lanes by switching the feature test off)."""
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, torch_version
from torch.utils.data import DataLoader

import main
import models
from models import shufflenetv2_wock_op_woct as net
from models.channel_shuffle import ChannelShuffle
from tests.datasets import make_image_folder
from tools import export_onnx
from training import compat
from training.checkpoints import checkpoint as ckpt
from training.ema import ModelEma

INDEX_BUFFERS = ("out_index0", "out_index1", "inverse_index")


def test_loader_worker_options_build_a_loader_on_this_torch():
    data = list(range(6))
    assert compat.loader_worker_options(0) == {}  # never persistent_workers without workers (torch refuses it)
    loader = DataLoader(data, batch_size=3, num_workers=1, **compat.loader_worker_options(1))
    first, second = [[batch.tolist() for batch in loader] for _ in range(2)]  # two epochs
    assert first == second == [[0, 1, 2], [3, 4, 5]]


def test_tensors_equal_compares_float16_cpu_tensors_exactly():
    value = torch.tensor([1.0, 2.5, -3.0], dtype=torch.float16)
    assert compat.tensors_equal(value, value.clone())
    assert not compat.tensors_equal(value, torch.tensor([1.0, 2.501953125, -3.0], dtype=torch.float16))
    assert compat.tensors_equal(torch.arange(3), torch.arange(3)) and not compat.tensors_equal(
        torch.arange(3), torch.arange(1, 4))


def test_ema_of_a_float16_model_saves_its_shadow():
    """EMA.state_dict compares float16 weights with their float32 shadow (torch 1.5 has no CPU float16 torch.equal)."""
    model = torch.nn.Linear(3, 2).half()
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.copy_(model.weight.float() + 1.0)  # (torch 1.5 has no float16 arithmetic on the CPU)
    ema.update(model)
    saved = ema.state_dict()
    assert saved["weight"].dtype == torch.float32  # the shadow, not the rounded float16 copy
    assert compat.tensors_equal(saved["weight"].half(), ema.module.weight)


@pytest.fixture(params=["this torch", "no persistent=False"])
def buffers_mode(request, monkeypatch):
    """ChannelShuffle as this torch builds it, and as torch < 1.6 does (no register_buffer(persistent=False))."""
    if request.param == "no persistent=False":
        monkeypatch.setattr(compat, "has_non_persistent_buffers", lambda: False)
    return request.param


def test_shuffle_indices_stay_out_of_the_state_dict_and_follow_the_module(buffers_mode):
    shuffle = ChannelShuffle(8, impl="index_select")
    assert shuffle.state_dict() == {}
    assert set(INDEX_BUFFERS) <= {name for name, _ in shuffle.named_buffers()}
    shuffle.load_state_dict({})  # strict: nothing is missing
    reached = []
    shuffle._apply(lambda tensor: reached.append(tensor) or tensor)  # what .to(device) moves
    assert all(any(t is getattr(shuffle, name) for t in reached) for name in INDEX_BUFFERS)


def test_model_state_dict_is_torchvisions_both_ways(buffers_mode):
    ours = models.build_model("shufflenet_v2_x0_5", num_classes=4, shuffle_impl="index_select")
    theirs = torchvision.models.shufflenet_v2_x0_5(num_classes=4)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())  # strict
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(inputs), theirs(inputs), atol=1e-5)


@pytest.fixture
def hub_dir(tmp_path):
    old = compat.hub_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield str(tmp_path / "hub")
    torch.hub.set_dir(old)


def test_pretrained_path_is_where_torch_hub_looks(hub_dir):
    """The file `--pretrained` reads is the one torch.hub's own downloader finds in its cache (a URL with that file
    name and nothing listening behind it: found means no download was tried)."""
    path = net.hub_weights_path("shufflenet_v2_x0_5")
    assert path.startswith(hub_dir + os.sep)
    os.makedirs(os.path.dirname(path))
    weights = torchvision.models.shufflenet_v2_x0_5().state_dict()
    torch.save(weights, path)
    url = "http://127.0.0.1:9/" + os.path.basename(path)
    found = torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    assert list(found) == list(weights)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("compat") / "data"), classes=2, train_per_class=2,
                             val_per_class=1, size=(36, 36))


def test_a_checkpoint_loads_without_a_warning(tmp_path):
    """torch 2.1's weights_only loader warns "TypedStorage is deprecated" at every resume and evaluation (once per
    process, hence a fresh one here): checkpoints load through a loader that does not."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = str(tmp_path / "checkpoint.pth.tar")
    ckpt.atomic_save(ckpt.build_checkpoint(1, "shufflenet_v2_x0_5", model.state_dict(), optimizer.state_dict(), 0.0,
                                           {"lr": 0.1}), path)
    code = "import sys, training; from training.checkpoints import checkpoint; checkpoint.load_checkpoint(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, path], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_amp_on_a_cpu_without_cpu_autocast_trains_in_fp32_and_forced_bf16_is_one_error_line(
        data_root, tmp_path, monkeypatch, capsys):
    """torch < 1.10 has no CPU autocast: --amp alone trains in fp32 and says so in one line; --amp-dtype bfloat16
    is one error line naming the torch it needs, before anything is written."""
    monkeypatch.delattr(torch, "autocast", raising=False)  # what torch 1.5 and 1.8 lack (there for real)
    run = ["-a", "shufflenet_v2_x0_5", "-b", "2", "-j", "0", "--epochs", "1", "--train-crop-size", "32",
           "--val-resize-size", "32", "--val-crop-size", "32", "--device", "cpu", "--data", data_root, "--amp"]
    forced = str(tmp_path / "forced")
    assert main.main(run + ["--amp-dtype", "bfloat16", "--output-dir", forced]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --amp-dtype bfloat16 needs torch.autocast (torch >= 1.10); this torch is {}".format(torch.__version__)]
    assert not os.path.exists(forced)
    assert main.main(run + ["--output-dir", str(tmp_path / "fp32")]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout.count("=> --amp on cpu: this torch {} has no CPU autocast (torch >= 1.10), training in fp32".format(
        torch.__version__)) == 1
    assert any(" Epoch: [0][1/2]" in line for line in stdout)


def _exporter_complaints(opset, path):
    """The exporter's error about `opset`, or its warnings that name an opset; [] when it takes it silently."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            export_onnx.export(model, path, crop_size=4, opset=opset)
        except ValueError as exc:  # torch 1.x: "Unsupported ONNX opset version: 13"
            return [str(exc)]
    return [str(warning.message) for warning in caught if "opset" in str(warning.message).lower()]


def test_newest_onnx_opset_is_the_exporters_limit(tmp_path):
    newest = compat.newest_onnx_opset()
    assert newest >= (13 if torch_version() >= (1, 8) else 12)
    assert _exporter_complaints(newest, str(tmp_path / "newest.onnx")) == []
    assert _exporter_complaints(newest + 1, str(tmp_path / "beyond.onnx")) != []


def test_export_without_the_exporters_batchnorm_folding_folds_it_first(tmp_path, monkeypatch):
    """torch 1.5's exporter keeps BatchNormalization nodes: export_onnx fuses Conv + BatchNorm itself there."""
    import onnx

    monkeypatch.setattr(compat, "onnx_export_folds_batchnorm", lambda: False)
    model = models.build_model("shufflenet_v2_x0_5", num_classes=3, shuffle_impl="transpose")
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    folded = export_onnx.fold_batchnorm(model)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())  # the original untouched
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(inputs), model(inputs), atol=1e-4)
    path = str(tmp_path / "folded.onnx")
    export_onnx.export(model, path, crop_size=32)
    assert "BatchNormalization" not in {node.op_type for node in onnx.load(path).graph.node}
    compared = export_onnx.compare_with_onnxruntime(model, path, atol=1e-4, rtol=1e-4, crop_size=32)
    if compared is not None:  # onnxruntime is not on every lane
        worst, largest, within = compared
        assert within, (worst, largest)


def test_an_opset_the_exporter_lacks_falls_back_to_the_default_in_one_line(monkeypatch):
    monkeypatch.setattr(compat, "newest_onnx_opset", lambda: 12)
    lines = []
    assert export_onnx.usable_opset(13, log=lines.append) == 11
    assert lines == ["note: ONNX opset 13 needs torch >= 1.8 (this is torch {}): writing opset 11 (the default)"
                     .format(torch.__version__)]
    assert export_onnx.usable_opset(11, log=lines.append) == 11 and len(lines) == 1
