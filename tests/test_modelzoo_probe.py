"""The launchers' device probe (training/launch/modelzoo.py): the `python3` the launchers start is this lane's torch,
and the precision the launcher gives main.py is one that torch can run."""
import os
import subprocess
import sys

import torch
from conftest import REPO_ROOT, torch_version

from training import precision
from training.launch import modelzoo

PREFIX = "[train_full_8p.sh] python: "


def test_the_python3_the_launchers_start_is_this_lanes_torch(tmp_path):
    """test/*.sh run `python3` from PATH: in a lane whose bin is not first on PATH, they would train with another
    torch than the one under test. The launcher names its interpreter and torch right after the device probe (here
    it then stops at a batch that 2 processes cannot share, before any main.py starts)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHON", "MASTER_PORT", "MASTER_ADDR", "OMP_NUM_THREADS")}
    script = os.path.join(REPO_ROOT, "test", "train_full_8p.sh")
    result = subprocess.run(["bash", script, "--data_path=" + str(tmp_path), "--output_root=" + str(tmp_path / "out"),
                             "--device=cpu", "--nproc=2", "--batch_size=3"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.stderr.strip().splitlines()[-1] == "error: --batch_size=3 is not divisible by 2 processes"
    said = [line[len(PREFIX):] for line in result.stdout.splitlines() if line.startswith(PREFIX)]
    assert len(said) == 1, result.stdout
    assert said[0].endswith(" with torch " + torch.__version__), (
        "the launchers' python3 ({}) is not the torch under test ({}, {}): put this lane's bin first on PATH".format(
            said[0], torch.__version__, sys.executable))


def test_the_probe_reports_this_interpreters_torch_and_amp():
    probe = modelzoo.probe_device("cpu")
    assert (probe.kind, probe.count, probe.torch) == ("cpu", 1, torch.__version__)
    assert probe.free_port > 0 and probe.default_port > 0
    assert probe.amp_refusal == precision.amp_refusal("cpu")
    assert (probe.amp_refusal is None) == (torch_version() >= (1, 10))  # CPU autocast came with torch 1.10


def planned(precision_mode, amp_refusal):
    """(main.py's command line, the launcher's notes) for a 1p performance run on a CPU probe."""
    options, passthrough = modelzoo.parse_command_line(
        ["--mode", "performance", "--scale", "1p", "--precision_mode=" + precision_mode], {})
    probe = modelzoo.Probe("cpu", 1, 45678, 29688, torch="1.5.1", amp_refusal=amp_refusal)
    launch = modelzoo.Launch(options, probe, 1, [0], say=lambda line: None)
    return launch.specs(passthrough, {})[0].argv, launch.notes


def test_forced_mixed_precision_where_the_torch_has_no_cpu_autocast_is_plain_amp_said_once():
    """An explicit allow_mix_precision forces bf16 on a CPU; where this torch cannot (no CPU autocast), the launcher
    passes --amp alone (main.py then trains in fp32 and says why) and says so once."""
    refusal = "bf16 autocast on the CPU needs torch >= 1.10 (this is torch 1.5.1)"
    argv, notes = planned("allow_mix_precision", refusal)
    assert "--amp" in argv and "--amp-dtype" not in argv
    assert [line for line in notes if "bf16" in line] == [
        "--precision_mode=allow_mix_precision cannot force bf16 here: " + refusal]
    argv, notes = planned("allow_mix_precision", None)
    assert argv[argv.index("--amp-dtype"):argv.index("--amp-dtype") + 2] == ["--amp-dtype", "bfloat16"]
    assert not any("cannot force" in line for line in notes)
    argv, notes = planned("must_keep_origin_dtype", refusal)
    assert "--amp" not in argv and not any("cannot force" in line for line in notes)
