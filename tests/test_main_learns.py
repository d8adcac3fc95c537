"""main.py learns: scikit-learn's digits (1797 8x8 images upscaled to 32x32 JPEGs) reach >= 90% val Acc@1.

RandomResizedCrop's default smallest crop (8% of the area, ImageNet's setting) leaves a few pixels of a 32-pixel
digit, and ShuffleNetV2 then needs ~25 epochs (several minutes) to pass 85%. training/data.py has no crop-scale
parameter yet, so this test narrows the crop area to 60..100% through `augment.random_crop_box` (the function the
train loader calls per image); everything else is the real main.py path. Validation resizes to 36 and crops 32, so
digits look as large as in the (60..100% area) training crops. Measured: 92.5% after 8 epochs, about a minute.
"""
import functools
import json
import os

import pytest
import torch

import main
from tests.datasets import make_digits_folder
from training import augment

CROP_SCALE = (0.6, 1.0)


@pytest.fixture
def milder_crops(monkeypatch):
    monkeypatch.setattr(augment, "random_crop_box", functools.partial(augment.random_crop_box, scale=CROP_SCALE))


def test_digits_reach_90_percent(tmp_path, milder_crops, capsys):
    root = make_digits_folder(str(tmp_path / "digits"), size=32)
    out = str(tmp_path / "out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main.main(["--data", root, "-a", "shufflenet_v2_x0_5", "-j", "0", "-b", "32", "--lr", "0.02",
                          "--epochs", "8", "--wd", "5e-5", "--label-smoothing", "0.1", "--color-jitter", "0",
                          "--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32",
                          "--seed", "1", "-p", "1000", "--eval-freq", "100", "--device", "cpu",
                          "--output-dir", out])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    with open(os.path.join(out, "metrics.jsonl")) as stream:
        evals = [r for r in map(json.loads, stream) if r["kind"] == "eval"]
    assert evals[-1]["images"] == 359
    assert evals[-1]["acc1"] >= 90.0, evals
    assert "[AVG-ACC] * Acc@1 {:.3f}".format(evals[-1]["acc1"]) in capsys.readouterr().out
