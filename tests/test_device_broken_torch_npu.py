"""An installed torch_npu without the CANN libraries (a GPU box, or a shell where test/env_npu.sh was not sourced).

The real wheel (`pip install --no-deps torch-npu==2.14.0`; .ci/run installs it on the main lane) registers a
`torch.backends` entry point, so torch >= 2.5 imports it inside `import torch`, where it fails with
`ImportError: libhccl.so`. Where the real wheel is not installed (the torch 1.8 lane, a developer's machine), a
stand-in with the same entry point and the same ImportError is put on PYTHONPATH, so every lane runs these checks.
Everything runs in fresh subprocesses: auto-loading happens once per interpreter, at `import torch`.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import FAKES_DIR, REPO_ROOT, tiny_run_args

CAUSE = "CANN libraries missing (libhccl.so): source test/env_npu.sh"
TINY_RUN = tiny_run_args("--dummy", "-b", "2", "--epochs", "1", "--steps-per-epoch", "1", "-p", "1")  # + a --device


def real_wheel_installed():
    spec = importlib.util.find_spec("torch_npu")
    return spec is not None and spec.origin is not None and not spec.origin.startswith(FAKES_DIR)


@pytest.fixture(scope="module")
def npu_env(tmp_path_factory):
    """Environment for the subprocesses: the real wheel as installed, else the stand-in first on PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TORCH_DEVICE_BACKEND_AUTOLOAD", None)  # as a user's shell: nothing set
    if real_wheel_installed():
        return env
    site = tmp_path_factory.mktemp("broken_npu_site")
    package = site / "torch_npu"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError('libhccl.so: cannot open shared object file: No such file or directory')\n")
    info = site / "torch_npu-2.14.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch_npu\nVersion: 2.14.0\n")
    (info / "entry_points.txt").write_text("[torch.backends]\ntorch_npu = torch_npu:_autoload\n")
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def python(args, env, timeout=240):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=timeout)


@pytest.mark.slow
def test_the_broken_plugin_is_really_there(npu_env):
    """The premise: importing torch_npu fails for the CANN reason (and, on torch >= 2.5, would kill `import torch`
    without the bootstrap)."""
    result = python(["-c", "import training, torch, torch_npu"], npu_env)
    assert result.returncode != 0 and "libhccl.so" in result.stderr


@pytest.mark.slow
def test_importing_training_first_keeps_import_torch_alive(npu_env):
    result = python(["-c", "import training, torch; print(torch.ones(2).sum().item())"], npu_env)
    assert (result.returncode, result.stdout) == (0, "2.0\n"), result.stderr[-2000:]


@pytest.mark.smoke
@pytest.mark.slow
def test_main_auto_falls_back_to_cpu_with_one_warning_line(npu_env, tmp_path):
    result = python(["main.py"] + TINY_RUN + ["--device", "auto", "--output-dir", str(tmp_path)], npu_env)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = "warning: --device auto: torch_npu is installed but cannot be used ({}); using cpu".format(CAUSE)
    assert [line for line in result.stderr.splitlines() if "torch_npu" in line] == [expected]
    assert "Traceback" not in result.stderr
    assert "[cpu id: 0 ] Epoch: [0][0/1]" in result.stdout
    assert os.path.isfile(os.path.join(str(tmp_path), "checkpoint.pth.tar"))


def test_main_device_npu_is_one_error_line(npu_env, tmp_path):
    result = python(["main.py"] + TINY_RUN + ["--device", "npu", "--output-dir", str(tmp_path)], npu_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --device npu: torch_npu cannot be used ({})".format(CAUSE)]
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.slow
def test_a_tool_still_works(npu_env, tmp_path):
    """tools/export_onnx.py imports torch and the model; --device npu in tools/demo.py is one error line too."""
    import torch
    import torchvision

    weights = str(tmp_path / "weights.pth")
    torch.save(torchvision.models.shufflenet_v2_x0_5(num_classes=3).state_dict(), weights)
    output = str(tmp_path / "model.onnx")
    result = python(["-m", "tools.export_onnx", weights, output, "--crop-size", "32", "--no-check"], npu_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.getsize(output) > 0
    image = tmp_path / "image.png"
    from PIL import Image
    Image.new("RGB", (40, 40), (120, 30, 200)).save(str(image))
    result = python(["-m", "tools.demo", weights, str(image), "--device", "npu"], npu_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --device npu: torch_npu cannot be used ({})".format(CAUSE)]
