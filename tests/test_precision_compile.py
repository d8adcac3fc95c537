"""--compile: the compiled run trains like the plain one (AMP, EMA, DDP) and saves torchvision's keys (no
`_orig_mod.`); a torch without torch.compile gives one error line.

torch.compile's default backend (inductor) needs ~5 minutes of C++ compilation for this model on a 2-core CPU, so
these tests choose --compile-backend aot_eager (AOT autograd: the forward and backward graphs traced and run by
torch.compile) and eager (Dynamo's graph capture only) for the DDP run; the user-facing default stays inductor.
"""
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, tiny_run_args

import main
from training.checkpoints.checkpoint import torch_load

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = tiny_run_args("--lr", "0.05", "--seed", "11", "--epochs", "2", "--steps-per-epoch", "2", "-p", "1",
                      "--eval-freq", "1", "--model-ema", "0.5")
needs_compile = pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile came with torch 2.0 "
                                   "(test_no_torch_compile_is_one_error_line covers this torch)")


def assert_torchvision_loads(saved):
    for key in ("state_dict", "model_ema"):
        assert not any("_orig_mod" in name or name.startswith("module.") for name in saved[key]), key
        torchvision.models.shufflenet_v2_x0_5(num_classes=3).load_state_dict(saved[key], strict=True)


def assert_close(a, b, **tolerance):
    for key in ("state_dict", "model_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            if a[key][name].is_floating_point():
                assert torch.allclose(a[key][name], b[key][name], **tolerance), (key, name)
            else:
                assert torch.equal(a[key][name], b[key][name]), (key, name)


@pytest.mark.slow
@needs_compile
def test_compiled_amp_ema_run_saves_torchvision_keys_and_trains_like_eager(data_root, tmp_path, capsys,
                                                                          monkeypatch):
    backends = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: backends.append(kw["backend"]) or real_compile(
        module, **kw))
    argv = SMALL + ["--data", data_root, "-b", "4", "--amp"]
    plain, compiled = str(tmp_path / "plain"), str(tmp_path / "compiled")
    assert main.main(argv + ["--output-dir", plain]) == 0
    assert backends == []
    assert main.main(argv + ["--compile", "--compile-backend", "aot_eager", "--output-dir", compiled]) == 0
    assert backends == ["aot_eager"]
    capsys.readouterr()
    a = torch_load(os.path.join(plain, "checkpoint.pth.tar"))
    b = torch_load(os.path.join(compiled, "checkpoint.pth.tar"))
    assert_torchvision_loads(b)
    assert b["args"]["compile"] is True and a["epoch"] == b["epoch"] == 2
    # the same arithmetic up to bfloat16 rounding in a different order: close, and trained (not the initial weights)
    assert_close(a, b, rtol=0.05, atol=2e-3)
    start = torchvision.models.shufflenet_v2_x0_5(num_classes=3).state_dict()
    assert not torch.equal(start["fc.weight"], b["state_dict"]["fc.weight"])


@pytest.mark.slow
@needs_compile
def test_compiled_ddp_run_matches_the_plain_ddp_run(data_root, tmp_path):
    outs = {}
    for name, extra in (("plain", []), ("compiled", ["--compile", "--compile-backend", "eager"])):
        outs[name] = str(tmp_path / name)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("MASTER_PORT", None)
        done = subprocess.run([sys.executable, "main.py", "--multiprocessing-distributed", "--device_num", "2",
                               "-b", "4"] + SMALL + ["--data", data_root, "--output-dir", outs[name]] + extra,
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch_load(os.path.join(outs["plain"], "checkpoint.pth.tar")), torch_load(os.path.join(outs["compiled"],
                                                                                      "checkpoint.pth.tar"))
    assert_torchvision_loads(b)
    assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_torch_compile_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delattr(torch, "compile", raising=False)  # as torch 1.x (the Python 3.7 lane really lacks it)
    out = tmp_path / "out"
    assert main.main(["--dummy", "--device", "cpu", "--compile", "--output-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: --compile needs torch.compile (torch >= 2.0); this torch is {}\n".format(
        torch.__version__)
    assert captured.out == "" and not out.exists()
