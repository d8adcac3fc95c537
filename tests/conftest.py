"""Shared test setup. The repository root is on sys.path through pyproject.toml's `pythonpath = ["."]`, so tests
import `main`, `models`, `training`, `tools` and `tests.datasets` however pytest is started, from any folder."""
import os

import pytest

import training  # noqa: F401  (bootstrap before torch: an installed torch_npu without CANN must not break it)
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES_DIR = os.path.join(REPO_ROOT, "tests", "fakes")


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

