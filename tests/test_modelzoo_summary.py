"""tools/modelzoo_summary.py on its own: the figures it takes from a ModelZoo log, the logs it refuses, and the
summary file it writes (atomically, into a folder it makes)."""
import os

import pytest

from tools import modelzoo_summary
from training.errors import UserError, run_cli
from training.logs import modelzoo_format


def sample_log():
    head = modelzoo_format.prefix("npu", 0)
    return [
        modelzoo_format.format_step(head, 0, 0, 2, [("Loss", 7.0, 7.0, ".4e")]),
        modelzoo_format.format_step(head, 0, 1, 2, [("Loss", 6.5, 6.75, ".4e")]),
        modelzoo_format.format_fps(head, 1000.0, 1.0),
        "[npu id: 0 ] Test: [0/1]\tLoss 9.9e+00 (9.9e+00)",
        modelzoo_format.format_acc(head, 10.0, 30.0),
        modelzoo_format.format_step(head, 1, 1, 2, [("Loss", 5.25, 5.5, ".4e")]),
        modelzoo_format.format_fps(head, 2000.0, 0.5),
        modelzoo_format.format_acc(head, 20.0, 40.0),
        modelzoo_format.format_acc(head, 99.0, 99.0, tag=modelzoo_format.EMA_ACC_TAG),
    ]


def test_summary_takes_last_fps_last_training_loss_and_model_accuracy():
    summary = modelzoo_summary.summarize(sample_log(), network="Net", rank_size=8, batch_size=1024, mode="acc",
                                         e2e_seconds=12.7, device_type="aarch64")
    assert summary == [("Network", "Net"), ("RankSize", 8), ("BatchSize", 1024), ("DeviceType", "aarch64"),
                       ("CaseName", "Net_bs1024_8p_acc"), ("ActualFPS", "2000.000"), ("TrainingTime", "0.5120"),
                       ("ActualLoss", "5.2500"), ("TrainAccuracy", "20.000"), ("E2ETrainingTime", "12")]
    assert modelzoo_summary.final_lines(summary) == ["Final Performance images/sec : 2000.000",
                                                     "Final Train Accuracy : 20.000",
                                                     "E2E Training Duration sec : 12"]


def test_summary_refuses_logs_of_unfinished_runs():
    lines = sample_log()
    with pytest.raises(UserError, match="FPS@all"):
        modelzoo_summary.summarize(lines[:2], network="Net", rank_size=1, batch_size=8, mode="perf", e2e_seconds=1)
    with pytest.raises(UserError, match="AVG-ACC"):
        modelzoo_summary.summarize(lines[:3], network="Net", rank_size=1, batch_size=8, mode="acc", e2e_seconds=1)
    assert dict(modelzoo_summary.summarize(
        lines[:3], network="Net", rank_size=1, batch_size=8, mode="perf", e2e_seconds=1))["ActualFPS"] == "1000.000"


def test_summary_command_writes_file_atomically(tmp_path, capsys):
    log = tmp_path / "train_0.log"
    log.write_text("\n".join(sample_log()) + "\n")
    code = modelzoo_summary.main([str(log), "--network", "Net", "--rank-size", "1", "--batch-size", "256",
                                  "--mode", "perf", "--e2e-seconds", "5", "--output-dir", str(tmp_path)])
    assert code == 0
    assert sorted(os.listdir(str(tmp_path))) == ["Net_bs256_1p_perf.log", "train_0.log"]
    values = modelzoo_summary.read_summary(str(tmp_path / "Net_bs256_1p_perf.log"))
    assert values["TrainingTime"] == "0.1280" and "TrainAccuracy" not in values
    assert "Final Performance images/sec : 2000.000" in capsys.readouterr().out
    code = run_cli(modelzoo_summary.main, [str(tmp_path / "missing.log"), "--rank-size", "1", "--batch-size", "1",
                                           "--mode", "perf", "--e2e-seconds", "1", "--output-dir", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: training log")
    # an output folder that does not exist yet is made (the README's example writes to a fresh /tmp/summary)
    fresh = tmp_path / "new" / "summary"
    assert modelzoo_summary.main([str(log), "--rank-size", "1", "--batch-size", "256", "--mode", "perf",
                                  "--e2e-seconds", "5", "--output-dir", str(fresh)]) == 0
    assert os.listdir(str(fresh)) == ["Shufflenetv2_ID0099_for_PyTorch_bs256_1p_perf.log"]
