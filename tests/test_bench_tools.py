"""tools/bench_model.py, tools/bench_gpu.py and tools/bench_loader.py: each runs a tiny benchmark on the CPU and
prints a JSON report whose figures are consistent, and refuses bad input with one error line."""
import importlib
import json
import os

import pytest
import torch

from training.data import loaders
from training.errors import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def run_tool(module, argv, capsys):
    """(exit code, stdout lines, stderr) of a tool's main() run in this process, as the command line runs it."""
    code = run_cli(module.main, argv)
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def load_tool(name):
    return importlib.import_module("tools." + name)


def test_bench_model_reports_every_layout_and_impl(capsys):
    bench = load_tool("bench_model")
    code, lines, _ = run_tool(bench, ["--device", "cpu", "--arch", "shufflenet_v2_x0_5", "--batch-size", "2",
                                      "--rounds", "2", "--steps", "1", "--image-size", "32", "--threads", "1",
                                      "--shuffle-impl", "auto", "index_select"], capsys)
    assert code == 0
    report = json.loads(lines[-1])
    assert [(r["device"], r["layout"], r["batch_size"]) for r in report["results"]] == [
        ("cpu", "nchw", 2), ("cpu", "channels_last", 2)]
    ratios = []
    for row in report["results"]:
        assert set(row["ours"]) == {"ours", "ours[index_select]"} and row["torchvision_img_s"] > 0
        for figures in row["ours"].values():
            assert figures["img_s"] > 0 and figures["ratio"] > 0
            ratios.append(figures["ratio"])
    assert report["min_ratio"] == min(ratios)
    assert sum(1 for line in lines if line.startswith("cpu ")) >= 4  # table rows


def test_bench_tools_refuse_bad_input_in_one_line(capsys, monkeypatch):
    bench = load_tool("bench_model")
    code, _, err = run_tool(bench, ["--arch", "resnet50"], capsys)
    assert code == 2 and err.strip().startswith("error: unknown --arch 'resnet50'") and len(err.splitlines()) == 1
    gpu = load_tool("bench_gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_tool(gpu, [], capsys)
    assert code == 2 and err.strip().startswith("error: no CUDA GPU here") and len(err.splitlines()) == 1
    code, _, err = run_tool(gpu, ["--device", "cpu"], capsys)
    assert code == 2 and "add --tiny" in err
    code, _, err = run_tool(gpu, ["--device", "cpu", "--tiny", "--steps", "0"], capsys)
    assert code == 2 and err.strip() == "error: --steps must be at least 1, got 0"


def test_bench_gpu_dry_run_on_cpu(capsys):
    gpu = load_tool("bench_gpu")
    code, lines, _ = run_tool(gpu, ["--device", "cpu", "--tiny"], capsys)
    assert code == 0
    report = json.loads(lines[-1])
    (row,) = report["results"]
    assert (row["arch"], row["layout"], row["batch_size"], row["compile"]) == (
        "shufflenet_v2_x1_0", "channels_last", 4, False)
    assert row["ours"]["ours"]["img_s"] > 0 and report["hardware"]["cpu_cores"] >= 1
    assert report["loader"]["img_s"] > 0, report["loader"]


def test_bench_loader_makes_imagenet_like_data_and_prints_json(tmp_path, capsys, decode_path):
    import json

    from PIL import Image

    from tools import bench_loader

    root = str(tmp_path / "bench")
    assert bench_loader.main(["--make-data", root, "--count", "24"]) == 0
    samples, classes = loaders.scan_folder(os.path.join(root, "train"))
    assert len(samples) == 24 and len(classes) == 10
    with Image.open(samples[0][0]) as image:
        assert image.format == "JPEG" and max(image.size) >= 400
    capsys.readouterr()
    assert bench_loader.main(["--data", root, "--workers", "0", "--batches", "1", "--batch-size", "4",
                              "--rounds", "1", "--max-workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["workers"] == 0 and result["ours_img_s"] > 0 and result["torchvision_img_s"] > 0
    assert result["fast_decode"] == (decode_path == "fast")
    assert result["ratio"] == pytest.approx(result["ours_img_s"] / result["torchvision_img_s"], rel=0.05)
    ours_ms = result["ours_loader_cpu_ms_per_img"]
    assert result["ratio_per_cpu_second"] == pytest.approx(result["torchvision_cpu_ms_per_img"] / ours_ms, rel=0.05)
    stages = ["read", "header", "decode", "resize"] if decode_path == "fast" else ["read", "decode", "resize"]
    assert list(result["stages_cpu_ms"]) == stages + ["collate", "device"]
    assert all(value >= 0 for value in result["stages_cpu_ms"].values()) and result["stages_cpu_ms"]["decode"] > 0
    assert list(result["workers_img_s"]) == ["1"] and result["workers_img_s"]["1"] > 0
    assert run_cli(bench_loader.main, ["--workers", "0"]) == 2  # no --data: one-line error, non-zero exit
    assert run_cli(bench_loader.main, ["--data", root, "--rounds", "0"]) == 2  # was a StatisticsError traceback
