"""tools/accelerator_check.py where there is no GPU: the dry run lists every step, a real run refuses in one line,
and the generated JPEG folder is what the end-to-end step measures on."""
import os

import pytest
import torch
from PIL import Image

from training.errors import run_cli
from training.data import loaders

from tools import accelerator_check


def step_names(device="cuda", smoke=False):
    return [step.name for step in accelerator_check.steps(accelerator_check.Sizes(device, smoke))]


def test_dry_run_lists_every_step_with_its_command_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # anywhere, GPU or not
    out = str(tmp_path / "report")
    assert run_cli(accelerator_check.main, ["--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    names = step_names()
    assert len(names) == 5
    for name in names:
        assert "--step {} --device cuda --out {}".format(name, out) in text
    assert "train_performance_1p.sh --device=cuda" in text and "tests/test_cuda.py" in text
    assert not os.path.exists(out)  # nothing ran, nothing was written
    assert run_cli(accelerator_check.main, ["--dry-run", "--device", "cpu", "--smoke", "--only", names[0],
                                            "--out", out]) == 0
    smoke = capsys.readouterr().out
    assert "--step {} --device cpu".format(names[0]) in smoke and "--smoke" in smoke
    assert not any("--step {} ".format(name) in smoke for name in names[1:])


@pytest.mark.parametrize("argv,message", [
    ([], "error: no CUDA GPU here (torch.cuda.is_available() is False)"),
    (["--device", "cpu"], "error: --device cpu only proves the script: add --smoke"),
    (["--only", "lunch"], "error: unknown step lunch: the steps are cuda_tests, "),
    (["--budget-s", "0"], "error: --budget-s must be a positive number"),
])
def test_without_cuda_or_with_bad_flags_one_error_line_and_a_non_zero_exit(tmp_path, capsys, monkeypatch, argv,
                                                                            message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = str(tmp_path / "report")
    assert run_cli(accelerator_check.main, argv + ["--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out)


def test_generated_jpegs_are_an_imagenet_sized_folder(tmp_path):
    root = str(tmp_path / "jpegs")
    written = accelerator_check.make_jpeg_folder(root, count=30, distinct=4, classes=3)
    train_dir, val_dir = loaders.check_data_root(root)
    samples, classes = loaders.scan_folder(train_dir)
    assert written == 30 + 3 and len(samples) == 30 and classes == ["class_00", "class_01", "class_02"]
    assert len(loaders.scan_folder(val_dir)[0]) == 3
    sizes = set()
    for path, _ in samples:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.add(image.size)
    assert len(sizes) == 4  # the distinct images, each written again under other names
    assert all(300 <= min(size) and max(size) <= 520 for size in sizes)
