"""main.py learns: scikit-learn's digits (1797 8x8 images upscaled to 32x32 JPEGs) reach >= 80% val Acc@1, eight
times the 10% of chance.

RandomResizedCrop's default smallest crop (8% of the area, ImageNet's setting) leaves a few pixels of a 32-pixel
digit, and ShuffleNetV2 then needs ~25 epochs (several minutes) to pass 85%. So this run narrows the crop area to
60..100% with `--train-crop-scale 0.6 1.0`, the flag a user with small images would set. Validation resizes to 36
and crops 32, so digits look as large as in the training crops.

The float rounding of a CPU's kernels changes the run's path: seed 1 gave 92.5% on an Intel CI machine and 88.02% on
an AMD EPYC. Measured on the EPYC (this test's flags, --seed 1..4): 88.02, 92.76, 89.14, 88.30 after 8 epochs
(89.97..91.92 after 10). The threshold sits 8 points under the lowest of them, over 1.5 times the 4.7-point spread,
and still proves learning (a model that learned nothing scores ~10%). About a minute on a free core.
"""
import json
import os

import pytest

import main
from tests.datasets import make_digits_folder

LEARNED_ACC1 = 80.0  # measured 88.0..92.8 across seeds and CPUs (module docstring); chance is 10


@pytest.mark.slow
def test_digits_reach_80_percent(tmp_path, capsys, one_thread):
    root = make_digits_folder(str(tmp_path / "digits"), size=32)
    out = str(tmp_path / "out")
    code = main.main(["--data", root, "-a", "shufflenet_v2_x0_5", "-j", "0", "-b", "32", "--lr", "0.02",
                      "--epochs", "8", "--wd", "5e-5", "--label-smoothing", "0.1", "--color-jitter", "0",
                      "--train-crop-size", "32", "--train-crop-scale", "0.6", "1.0",
                      "--val-resize-size", "36", "--val-crop-size", "32",
                      "--seed", "1", "-p", "1000", "--eval-freq", "100", "--device", "cpu",
                      "--output-dir", out])
    assert code == 0
    with open(os.path.join(out, "metrics.jsonl")) as stream:
        evals = [r for r in map(json.loads, stream) if r["kind"] == "eval"]
    assert evals[-1]["images"] == 359
    assert evals[-1]["acc1"] >= LEARNED_ACC1, evals
    assert "[AVG-ACC] * Acc@1 {:.3f}".format(evals[-1]["acc1"]) in capsys.readouterr().out
