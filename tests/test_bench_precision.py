"""tools/bench_precision.py: fp32 and bf16 measured side by side on a tiny model (figures only checked for being
measured: no timed assertions)."""
import json

import pytest
import torch
from conftest import requires_torch

from tools import bench_precision
from training import precision
from training.errors import UserError


TINY = ["--arch", "shufflenet_v2_x0_5", "--image-size", "32", "--batch-size", "2", "--rounds", "2", "--steps", "1",
        "--threads", "1"]


@requires_torch("1.10", "CPU autocast")
def test_prints_both_precisions_and_their_ratio(capsys, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_feature", lambda: None)
    threads = torch.get_num_threads()
    try:
        assert bench_precision.main(TINY) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert "native bf16: none; main.py --amp here: fp32" in lines[0]
    assert [line.split()[0] for line in lines[-5:-1]] == ["precision", "fp32", "bf16", "bf16/fp32"]
    figures = json.loads(lines[-1])
    for name in ("fp32", "bf16", "bf16/fp32"):
        assert figures[name]["wall"] > 0 and figures[name]["cpu"] > 0
    assert figures["amp_choice"] == "fp32" and figures["native_bf16"] is None


def test_refuses_a_torch_without_cpu_autocast(monkeypatch):
    monkeypatch.delattr(torch, "autocast", raising=False)
    with pytest.raises(UserError, match=r"needs torch.autocast \(torch >= 1.10\)"):
        bench_precision.main(TINY)


def test_bad_arguments_are_one_line():
    with pytest.raises(UserError, match="--rounds must be at least 1"):
        bench_precision.main(TINY + ["--rounds", "0"])
