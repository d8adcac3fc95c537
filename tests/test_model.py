"""ShuffleNetV2: key-for-key torchvision compatible, same outputs and gradients, registry and pretrained loading."""
import importlib
import os
import sys

import pytest
import torch
import torchvision

import models
from models import shufflenetv2_wock_op_woct as net
from training import compat

ARCHS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]
PARAMS = {"shufflenet_v2_x0_5": 1366792, "shufflenet_v2_x1_0": 2278604,
          "shufflenet_v2_x1_5": 3503624, "shufflenet_v2_x2_0": 7393996}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def twin_models(arch, shuffle_impl=None, channels_last=False):
    """torchvision's randomly initialised model and ours with its weights (loaded strictly)."""
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, arch)()
    ours = models.build_model(arch, shuffle_impl=shuffle_impl)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    if channels_last:
        theirs = theirs.to(memory_format=torch.channels_last)
        ours = ours.to(memory_format=torch.channels_last)
    return ours, theirs


def assert_same_forward_backward(ours, theirs, channels_last):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=0)
    ours.train()
    theirs.train()
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.allclose(out_ours, out_theirs, atol=1e-5, rtol=0)
    target = torch.tensor([3, 7])
    torch.nn.functional.cross_entropy(out_ours, target).backward()
    torch.nn.functional.cross_entropy(out_theirs, target).backward()
    theirs_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.allclose(param.grad, theirs_params[name].grad, atol=1e-5, rtol=1e-5), name
    theirs_buffers = dict(theirs.named_buffers())
    for name, buf in ours.state_dict().items():  # BatchNorm running statistics updated alike
        if "running" in name:
            assert torch.allclose(buf, theirs_buffers[name], atol=1e-6), name


@pytest.mark.smoke
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_same_outputs_and_gradients_as_torchvision(arch, channels_last):
    ours, theirs = twin_models(arch, channels_last=channels_last)
    assert_same_forward_backward(ours, theirs, channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_index_select_shuffle_model_matches_torchvision(channels_last):
    ours, theirs = twin_models("shufflenet_v2_x0_5", shuffle_impl="index_select", channels_last=channels_last)
    assert_same_forward_backward(ours, theirs, channels_last)


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dicts_load_both_ways_and_parameter_counts(arch):
    theirs = getattr(torchvision.models, arch)()
    ours = models.build_model(arch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == PARAMS[arch]


def test_num_classes_and_block_called_on_a_whole_tensor():
    model = models.shufflenet_v2_x0_5(num_classes=10).eval()
    assert model.fc.out_features == 10
    block = model.stage2[1]
    x = torch.randn(1, 48, 4, 4)
    first, second = block(x)  # a stride-1 block also accepts one tensor (it splits it itself)
    again = block(tuple(x.chunk(2, dim=1)))
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_registry_names_and_unknown_arch():
    assert models.MODEL_NAMES == sorted(ARCHS)
    for arch in ARCHS:
        assert arch in models.__all__ and getattr(models, arch) is getattr(net, arch)
    with pytest.raises(ValueError) as info:
        models.build_model("resnet50")
    assert str(info.value) == ("unknown --arch 'resnet50'; choose from: shufflenet_v2_x0_5, shufflenet_v2_x1_0, "
                               "shufflenet_v2_x1_5, shufflenet_v2_x2_0")


def torchvision_weight_urls():
    """{arch: URL} as this torchvision publishes them: *_Weights enums (0.13+) or the older `model_urls` table,
    which has no x1.5 / x2.0 weights (torchvision 0.9 of the torch 1.8 images)."""
    from torchvision.models import shufflenetv2 as tv
    if hasattr(tv, "ShuffleNet_V2_X0_5_Weights"):
        return {arch: getattr(tv, "ShuffleNet_V2_X{}_Weights".format(arch[-3:].upper())).IMAGENET1K_V1.url
                for arch in ARCHS}
    old = {arch: tv.model_urls["shufflenetv2_x{}".format(arch[-3:].replace("_", "."))] for arch in ARCHS}
    return {arch: url for arch, url in old.items() if url}


def test_weight_urls_are_torchvisions():
    urls = torchvision_weight_urls()
    assert {"shufflenet_v2_x0_5", "shufflenet_v2_x1_0"} <= set(urls)
    for arch, url in urls.items():
        assert net.WEIGHT_URLS[arch] == url


@pytest.fixture()
def hub_dir(tmp_path):
    old = compat.hub_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_pretrained_missing_names_file_and_url(hub_dir):
    expected = os.path.join(str(hub_dir), "checkpoints", "shufflenetv2_x1-5666bf0f80.pth")
    with pytest.raises(ValueError) as info:
        models.build_model("shufflenet_v2_x1_0", pretrained=True)
    message = str(info.value)
    assert expected in message and "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="nowhere.pth not found"):
        models.build_model("shufflenet_v2_x1_0", pretrained=str(hub_dir / "nowhere.pth"))


def test_pretrained_from_hub_cache_path_and_checkpoint(hub_dir, tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.shufflenet_v2_x0_5()
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), str(cache / "shufflenetv2_x0.5-f707e7126e.pth"))
    expected = source.state_dict()
    loaded = models.build_model("shufflenet_v2_x0_5", pretrained=True).state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    # a main.py-style checkpoint with DistributedDataParallel's "module." prefixes
    wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in expected.items()}}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(wrapped, str(path))
    loaded = models.build_model("shufflenet_v2_x0_5", pretrained=str(path)).state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    # fine-tuning: another num_classes keeps everything but the classifier
    tuned = models.build_model("shufflenet_v2_x0_5", num_classes=5, pretrained=str(path))
    assert torch.equal(tuned.conv5[0].weight, expected["conv5.0.weight"]) and tuned.fc.out_features == 5


def test_pretrained_bad_files_raise_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file .*junk.pth"):
        models.build_model("shufflenet_v2_x0_5", pretrained=str(junk))
    other = tmp_path / "x1.pth"
    torch.save(torchvision.models.shufflenet_v2_x1_0().state_dict(), str(other))
    with pytest.raises(ValueError, match="does not fit shufflenet_v2_x0_5: .*wrong shape"):
        models.build_model("shufflenet_v2_x0_5", pretrained=str(other))


class RefuseNpuImports:
    """A meta-path finder under which `import torch_npu` / `import apex` fail, as on a machine without them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch_npu", "apex"):
            raise ImportError("blocked for the test: " + name)
        return None


def test_models_import_without_torch_npu_or_apex():
    """A fresh import of the models package (the loaded one is put back afterwards) with torch_npu/apex blocked."""
    saved = {k: v for k, v in sys.modules.items() if k == "models" or k.startswith("models.")}
    blocker = RefuseNpuImports()
    for key in saved:
        del sys.modules[key]
    sys.meta_path.insert(0, blocker)
    try:
        fresh = importlib.import_module("models")
        assert fresh is not models
        assert fresh.build_model("shufflenet_v2_x0_5", num_classes=3).fc.out_features == 3
        assert "torch_npu" not in sys.modules and "apex" not in sys.modules
    finally:
        sys.meta_path.remove(blocker)
        for key in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            del sys.modules[key]
        sys.modules.update(saved)
