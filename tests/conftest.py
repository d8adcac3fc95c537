"""Shared test setup (the repository root is on sys.path through pyproject.toml's `pythonpath = ["."]`, so tests
import `main`, `models`, `training`, `tools` and `tests.datasets` however pytest is started): markers, and the
fixtures and helpers more than one test file uses.

Markers (registered in pyproject.toml): `slow` (over ~2.5 s in a `--durations=0` run of the whole suite:
`python -m pytest -m "not slow"` is the fast loop), `smoke` (a few representative tests per area for the middle
torch lanes: `-m smoke`), `cuda` (needs a CUDA GPU: skipped without one).

Fixtures: `data_root` (a tiny image folder per test module), `one_thread`, `decode_path`, `fresh_imports`, `fakes`.
Helpers (import them from conftest): `tiny_run_args`, `read_jsonl`, `requires_torch`, `small_net`."""
import json
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES_DIR = os.path.join(REPO_ROOT, "tests", "fakes")

import training  # noqa: E402,F401  (bootstrap before torch: an installed torch_npu without CANN must not break it)
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tests.datasets import make_image_folder  # noqa: E402
from training import device as devices  # noqa: E402

# The image folder `data_root` makes: 3 classes of 4 train and 2 val images, 36x36. A test module that needs
# another shape says so at its top, e.g. IMAGE_FOLDER = dict(classes=2, train_per_class=2, val_per_class=1).
IMAGE_FOLDER = dict(classes=3, train_per_class=4, val_per_class=2, size=(36, 36))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(no_gpu)


@pytest.fixture(scope="module")
def data_root(request, tmp_path_factory):
    """A fresh ImageFolder data set of random JPEGs for the test module (root/train/<class>/, root/val/<class>/),
    shaped by IMAGE_FOLDER above, updated by the module's own IMAGE_FOLDER if it has one."""
    shape = dict(IMAGE_FOLDER, **getattr(request.module, "IMAGE_FOLDER", {}))
    return make_image_folder(str(tmp_path_factory.mktemp("data")), **shape)


def tiny_run_args(*flags, workers=0):
    """main.py's command line for a run that takes seconds on a CPU: the x0.5 model at 32-pixel crops with
    `workers` data workers, then `flags` (a later flag overrides an earlier one, as argparse does)."""
    return ["-a", "shufflenet_v2_x0_5", "-j", str(workers), "--train-crop-size", "32", "--val-resize-size", "32",
            "--val-crop-size", "32", "--device", "cpu"] + list(flags)


def read_jsonl(path):
    """The records of a JSON-lines file such as metrics.jsonl, in order."""
    with open(path) as stream:
        return [json.loads(line) for line in stream]


@pytest.fixture
def one_thread():
    """One intra-op thread: the suite shares 2 cores, these tiny tensors gain nothing from more, and two OpenMP
    threads waiting for each other on a busy CPU make a step up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torch_version():
    """(major, minor) of the installed torch, e.g. (1, 8) for 1.8.1+cu102."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def requires_torch(version, feature):
    """Skip marker for a test that needs `feature`, which came with torch `version` ("1.10"): the reason names both,
    so the torch 1.8.1 lane's skips say what that torch lacks. Use only for a real torch feature."""
    needed = tuple(int(part) for part in version.split("."))
    return pytest.mark.skipif(torch_version() < needed, reason="needs {} (torch >= {}; this is torch {})".format(
        feature, version, torch.__version__))


@pytest.fixture(params=["fast", "pillow"])
def decode_path(request, monkeypatch):
    """Runs a test with the fast decoder (simplejpeg + OpenCV, the default) and again with it disabled."""
    from training.data import decode
    if request.param == "fast" and decode.fast_modules() is None:
        pytest.skip("simplejpeg/opencv-python-headless not installed: only the Pillow path can run")
    monkeypatch.setenv(decode.FAST_DECODE_ENV, "1" if request.param == "fast" else "0")
    return request.param


def small_net():
    """A seeded conv-BN-ReLU-pool-linear net (3 classes) with every kind of parameter group: conv and linear weights
    and biases, BatchNorm weight and bias."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


@pytest.fixture
def fresh_imports(monkeypatch):
    """Forget cached guarded imports and fake modules; restore torch.npu afterwards."""
    names = ("torch_npu", "apex", "apex.amp", "apex.optimizers")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.setattr(devices, "_IMPORTS", {})
    monkeypatch.setattr(torch, "npu", None, raising=False)
    yield monkeypatch
    # monkeypatch only restores keys that existed before: drop the fakes imported during the test ourselves
    for name in names:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


@pytest.fixture
def fakes(fresh_imports):
    """The recording stand-ins of tests/fakes imported as `apex` and `torch_npu`, their call logs emptied."""
    fresh_imports.syspath_prepend(FAKES_DIR)
    import apex
    import torch_npu
    del apex.CALLS[:]
    del torch_npu.CALLS[:]
    return apex, torch_npu
