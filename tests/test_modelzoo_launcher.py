"""The ModelZoo launchers: test/train_{full,performance}_{1p,8p}.sh (shims) -> training/modelzoo.py.

Three kinds of tests:
- end to end: each script runs the real main.py on CPU (x0.5 model, 32-pixel crops, a few steps, tiny generated
  images or --dummy); the 8p scripts start 2 CPU processes. The summaries' numeric keys must parse as numbers.
- in process: training.launch.modelzoo's argument parsing and launch plan (both flag spellings, two-value flags,
  recipes,
  CPU shrink, CPU binding) checked against what the real main.py parser makes of the command line it builds.
- launcher mechanics (failure of one rank, Ctrl-C, SIGKILL, old logs kept): the scripts run in a copy of the
  repository whose main.py is a fake that records its arguments, so they take a fraction of a second each.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_ROOT

from training import options as main_options
from tests.datasets import make_image_folder
from tools import modelzoo_summary
from training.checkpoints import checkpoint as ckpt
from training.launch import modelzoo
from training.logs import modelzoo_format
from training.launch import supervisor



NUMERIC_KEYS = ("RankSize", "BatchSize", "ActualFPS", "TrainingTime", "ActualLoss", "E2ETrainingTime")
# Small enough for 2 shared CPU cores. FP32 keeps the fp32 path of the launchers covered and is fast on any CPU;
# the 1p performance test keeps the default precision (--amp: bf16 autocast on a CPU with native bf16, else fp32).
TINY_DEFAULT_PRECISION = ["--arch=shufflenet_v2_x0_5", "--train-crop-size=32", "--val-resize-size=36",
                          "--val-crop-size=32", "--print-freq=1", "--workers=1"]
TINY = TINY_DEFAULT_PRECISION + ["--precision_mode=must_keep_origin_dtype"]


def launch(script, args, repo=REPO_ROOT, env=None, timeout=240):
    full_env = dict(os.environ)
    for name in ("MASTER_PORT", "MASTER_ADDR", "ASCEND_DEVICE_ID", "OMP_NUM_THREADS"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(["bash", os.path.join(repo, "test", script)] + list(args), capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def without_device_note(stderr):
    """stderr's lines less the device probe's one warning, printed where a torch_npu without CANN is installed (as on
    CI's main lane): `--device auto` then says why it uses cuda/cpu."""
    return [line for line in stderr.splitlines() if not line.startswith("warning: --device auto: torch_npu ")]


def check_summary(output_root, device_id, case_name, accuracy):
    values = modelzoo_summary.read_summary(os.path.join(output_root, device_id, case_name + ".log"))
    for key in NUMERIC_KEYS + (("TrainAccuracy",) if accuracy else ()):
        float(values[key])  # raises if empty or not a number
    assert float(values["ActualFPS"]) > 0
    assert values["CaseName"] == case_name
    assert ("TrainAccuracy" in values) == accuracy
    return values


def write_previous_run(folder):
    """Files as an earlier finished run of main.py leaves them; the launcher must only move them aside."""
    os.makedirs(folder)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "train_0.log"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write("earlier run: " + name)


def assert_previous_run_kept(folder):
    kept, = [name for name in os.listdir(folder) if name.startswith("previous-")]
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "train_0.log"):
        assert open(os.path.join(folder, kept, name)).read() == "earlier run: " + name


def assert_previous_run_untouched(folder):
    assert sorted(os.listdir(folder)) == ["checkpoint.pth.tar", "model_best.pth.tar", "train_0.log"]
    for name in os.listdir(folder):
        assert open(os.path.join(folder, name)).read() == "earlier run: " + name


# ---------------------------------------------------------------------------------------------------------------
# End to end on CPU with the real main.py


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("tiny")), classes=2, train_per_class=4, val_per_class=3)


@pytest.mark.smoke
@pytest.mark.slow
def test_performance_1p_on_synthetic_data(tmp_path):
    out = str(tmp_path)
    result = launch("train_performance_1p.sh", ["--output_root=" + out, "--batch_size=4", "--device_id=3",
                                                "--steps-per-epoch=3"] + TINY_DEFAULT_PRECISION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synthetic data (--dummy)" in result.stdout
    assert "CPU: performance run of batch 4, 1 epoch(s) of 3 steps, 0.5 epoch(s) of warm-up" in result.stdout
    values = check_summary(out, "3", "Shufflenetv2_ID0099_for_PyTorch_bs4_1p_perf", accuracy=False)
    assert values["RankSize"] == "1" and values["BatchSize"] == "4"
    assert "Final Performance images/sec : {}".format(values["ActualFPS"]) in result.stdout
    log = open(os.path.join(out, "3", "train_3.log")).read()
    records = modelzoo_format.parse_log(log.splitlines())
    assert float(values["ActualFPS"]) == pytest.approx([r for r in records if r["kind"] == "fps"][-1]["fps"],
                                                      abs=1e-3)
    assert float(values["ActualLoss"]) == pytest.approx([r for r in records if r["kind"] == "step"][-1]["loss"],
                                                       rel=1e-3)
    assert len([r for r in records if r["kind"] == "step"]) == 3  # --steps-per-epoch=3 won over the CPU shrink


@pytest.mark.slow
def test_full_1p_with_the_paper_recipe_on_tiny_image_folder(tmp_path, tiny_data):
    """Also proves that main.py accepts every flag of the paper recipe, BN recalibration included, that the
    checkpoint records the recipe, and that a two-value flag passes through in the `--flag=a b` form."""
    out = str(tmp_path)
    result = launch("train_full_1p.sh", ["--data_path=" + tiny_data, "--output_root=" + out, "--batch_size=4",
                                         "--epochs=1", "--recipe=paper", "--train-crop-scale=0.5", "1.0"] + TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BatchNorm statistics recomputed" in open(os.path.join(out, "0", "train_0.log")).read()
    values = check_summary(out, "0", "Shufflenetv2_ID0099_for_PyTorch_bs4_1p_acc", accuracy=True)
    assert 0.0 <= float(values["TrainAccuracy"]) <= 100.0
    assert "Final Train Accuracy : {}".format(values["TrainAccuracy"]) in result.stdout
    saved = ckpt.load_checkpoint(os.path.join(out, "0", "checkpoint.pth.tar"))["args"]
    assert (saved["recipe"], saved["label_smoothing"], saved["bn_recalibrate"]) == ("paper", 0.1, 1251)
    assert list(saved["train_crop_scale"]) == [0.5, 1.0] and saved["seed"] == 49


@pytest.mark.slow
@pytest.mark.parametrize("script, mode, extra", [
    ("train_performance_8p.sh", "perf", ["--steps-per-epoch=3", "--batch_size=4"]),
    ("train_full_8p.sh", "acc", ["--epochs=1", "-b", "4"]),  # main.py's spellings: -b N, --data DIR
])
def test_8p_scripts_run_two_cpu_processes_with_one_log_each(tmp_path, tiny_data, script, mode, extra):
    out = str(tmp_path)
    data = ["--data", tiny_data] if mode == "acc" else []
    result = launch(script, data + ["--output_root=" + out] + extra + TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es)" in result.stdout
    values = check_summary(out, "0", "Shufflenetv2_ID0099_for_PyTorch_bs4_2p_" + mode, accuracy=mode == "acc")
    assert values["RankSize"] == "2"
    rank0 = open(os.path.join(out, "0", "train_0.log")).read()
    rank1 = open(os.path.join(out, "1", "train_1.log")).read()
    assert "FPS@all" in rank0 and "FPS@all" not in rank1  # each rank its own file; rank 0 prints the figures


@pytest.mark.slow
def test_a_batch_too_large_for_the_data_fails_before_moving_the_previous_run(tmp_path, tiny_data):
    """main.py --check-only runs first: the earlier run's checkpoints stay where --resume expects them."""
    out = str(tmp_path / "out")
    write_previous_run(os.path.join(out, "0"))
    result = launch("train_full_1p.sh", ["--data_path=" + tiny_data, "--output_root=" + out, "--batch_size=64"]
                    + TINY)
    assert result.returncode == 2
    assert without_device_note(result.stderr) == [  # the launcher's spelling: the user typed --batch_size
        "error: the training set has 8 images, fewer than one batch (--batch_size=64): lower it"]
    assert_previous_run_untouched(os.path.join(out, "0"))
    result = launch("train_full_1p.sh", ["--data_path=" + tiny_data, "--output_root=" + out, "--lr-schedule=step"])
    assert result.returncode == 2 and "argument --lr-schedule: invalid choice: 'step'" in result.stderr
    assert_previous_run_untouched(os.path.join(out, "0"))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before any Python start of main.py, nothing created


def test_full_script_without_data_path_fails_naming_it(tmp_path):
    result = launch("train_full_8p.sh", ["--output_root=" + str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --data_path=DIR is required for full runs (an ImageNet-style folder with train/ and val/)"]


def test_unknown_precision_mode_fails_naming_it(tmp_path):
    result = launch("train_performance_1p.sh",
                    ["--precision_mode=allow_fp32_to_fp16", "--output_root=" + str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown --precision_mode=allow_fp32_to_fp16")
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("script, args, message", [
    ("train_full_1p.sh", ["--data_path"], "error: --data_path needs a value: write --data_path=VALUE"),
    ("train_full_1p.sh", ["--data_path="], "error: --data_path needs a value: write --data_path=VALUE"),
    ("train_performance_1p.sh", ["--device_id="], "error: --device_id needs a value: write --device_id=VALUE"),
    ("train_performance_8p.sh", ["--nnodes="], "error: --nnodes needs a value: write --nnodes=VALUE"),
    ("train_performance_8p.sh", ["--batch_size=big"], "error: --batch_size=big is not a whole number"),
    ("train_performance_8p.sh", ["-b", "big"], "error: --batch_size=big is not a whole number"),
    ("train_performance_8p.sh", ["--batch_size=0"], "error: --batch_size=0: need at least one image per step"),
    ("train_performance_1p.sh", ["--learning_rate=0.1x"], "error: --learning_rate=0.1x is not a number"),
    ("train_performance_1p.sh", ["--lr", "nan"], "error: --learning_rate=nan is not a number"),
    ("train_full_1p.sh", ["--data_path=MISSING"], "error: --data_path=MISSING: no such directory"),
    ("train_full_1p.sh", ["--data", "MISSING"], "error: --data_path=MISSING: no such directory"),
    ("train_full_1p.sh", ["--device_id=1", "--nproc=2"], "error: --nproc is for the 8p scripts"),
    ("train_full_8p.sh", ["--device_id=1"], "error: --device_id is for the 1p scripts; use --nproc=N here"),
    ("train_full_8p.sh", ["--dummy"], "error: --dummy: full runs train on data; give --data_path=DIR (synthetic "
                                      "data is for the performance scripts)"),
    ("train_performance_8p.sh", ["--recipe=fast"],
     "error: unknown --recipe=fast: use modelzoo (the original's hyperparameters) or paper"),
])
def test_flag_without_value_and_bad_numbers_fail(tmp_path, script, args, message):
    """Bad input ends in one line naming it, before any Python start of main.py, and leaves no output folder."""
    out = tmp_path / "out"
    result = launch(script, [arg.replace("MISSING", str(tmp_path / "missing")) for arg in args]
                    + ["--output_root=" + str(out)])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message.replace("MISSING", str(tmp_path / "missing"))]
    assert result.stdout == "" and not out.exists()


def test_help_names_both_spellings_and_exits_0():
    result = launch("train_full_8p.sh", ["--help"])
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: bash test/train_full_8p.sh")
    assert "--data_path=DIR (--data)" in result.stdout and "--recipe modelzoo_full_8p" in result.stdout


def test_test_folder_keeps_at_most_120_lines_of_bash_besides_env_npu():
    scripts = [name for name in os.listdir(os.path.join(REPO_ROOT, "test")) if name.endswith(".sh")]
    assert sorted(scripts) == ["env_npu.sh", "train_full_1p.sh", "train_full_8p.sh", "train_performance_1p.sh",
                               "train_performance_8p.sh"]
    lines = sum(len(open(os.path.join(REPO_ROOT, "test", name)).read().splitlines())
                for name in scripts if name != "env_npu.sh")
    assert lines <= 120


# ---------------------------------------------------------------------------------------------------------------
# In process: the command line the launcher builds, read back by main.py's own parser


class FakeProbe(modelzoo.Probe):
    def __init__(self, kind="cpu", count=1):
        super().__init__(kind, count, 45678, 29688)


def planned(args, mode="full", scale="8p", probe=None, environ=None, machine="x86_64"):
    """(Launch, specs, main.py's parsed args of each rank) for a launcher command line."""
    environ = {} if environ is None else environ
    options, passthrough = modelzoo.parse_command_line(["--mode", mode, "--scale", scale] + args, environ)
    probe = probe or FakeProbe()
    nprocs, device_ids = modelzoo.choose_processes(options, probe)
    plan = modelzoo.Launch(options, probe, nprocs, device_ids, say=lambda message: None)
    specs = plan.specs(passthrough, environ, machine=machine)
    parsed = [vars(main_options.parse_args(spec.argv[2:])) for spec in specs]
    return plan, specs, parsed


def test_both_spellings_give_main_py_the_same_values(tmp_path):
    data = str(tmp_path)
    modelzoo = planned(["--data_path=" + data, "--batch_size=64", "--learning_rate=0.1", "--epochs=3"])[2]
    spelled = planned(["--data", data, "-b", "64", "--lr", "0.1", "--epochs", "3"])[2]
    assert modelzoo == spelled
    assert [(args["data"], args["batch_size"], args["lr"], args["epochs"]) for args in modelzoo] == [
        (data, 64, 0.1, 3)] * 2
    assert planned(["--data_path=" + data, "-b64", "--learning-rate=0.1"])[2][0]["batch_size"] == 64


@pytest.mark.parametrize("form", [["--train-crop-scale=0.5", "1.0"], ["--train-crop-scale", "0.5", "1.0"]])
def test_two_value_flags_pass_through_in_both_forms(tmp_path, form):
    plan, specs, parsed = planned(["--data_path=" + str(tmp_path)] + form + ["--model-ema=0.999", "--amp"])
    assert [args["train_crop_scale"] for args in parsed] == [[0.5, 1.0]] * 2
    assert parsed[0]["model_ema"] == 0.999
    assert specs[0].argv[-5:] == ["--train-crop-scale", "0.5", "1.0", "--model-ema=0.999", "--amp"]


def test_modelzoo_dump_and_profiling_switches_are_accepted(tmp_path):
    args = ["--data_path=" + str(tmp_path), "--over_dump=False", "--data_dump_flag", "--profiling=True",
            "--data_dump_step=10"]
    plan, specs, parsed = planned(args)
    assert parsed == planned(["--data_path=" + str(tmp_path)])[2]  # nothing of them reaches main.py


def test_the_plan_applies_the_recipe_through_main_py(tmp_path):
    plan, specs, (rank0, rank1) = planned(["--data_path=" + str(tmp_path)], scale="8p")
    defaults = dict(rank0, recipe="modelzoo_full_8p", batch_size=8192, lr=4.0, epochs=240, warm_up_epochs=5,
                    momentum=0.0, weight_decay=1e-4, seed=49, eval_freq=5, arch="shufflenet_v2_x1_0", amp=True,
                    opt_level="O2", loss_scale="64", device="cpu", local_rank=0)
    assert rank0 == defaults
    assert specs[0].argv[:4] == [sys.executable, modelzoo.MAIN_PY, "--recipe", "modelzoo_full_8p"]
    assert rank1["local_rank"] == 1 and specs[1].env["RANK"] == "1"
    assert plan.case_name == "Shufflenetv2_ID0099_for_PyTorch_bs8192_2p_acc"
    paper = planned(["--recipe=paper"], mode="performance", scale="1p", probe=FakeProbe("cuda", 1))[2][0]
    assert {key: paper[key] for key in ("recipe", "batch_size", "lr", "lr_schedule", "epochs", "steps_per_epoch",
                                        "seed", "eval_freq", "gpu", "dummy")} == {
        "recipe": "paper", "batch_size": 1024, "lr": 0.5, "lr_schedule": "linear", "epochs": 2,
        "steps_per_epoch": 200, "seed": 49, "eval_freq": 5, "gpu": 0, "dummy": True}


def test_ranks_are_bound_to_their_share_of_cores_on_aarch64_only(tmp_path):
    args = ["--data_path=" + str(tmp_path), "--nproc=2"]
    cores = os.cpu_count()
    _, specs, _ = planned(args, machine="aarch64")
    assert [spec.cpus for spec in specs] == [supervisor.cpu_share(rank, 2, cores) for rank in (0, 1)]
    assert specs[1].cpus == list(range(max(1, cores // 2), 2 * max(1, cores // 2)))
    assert [spec.cpus for spec in planned(args, machine="x86_64")[1]] == [None, None]
    assert planned(["--data_path=" + str(tmp_path)], scale="1p", machine="aarch64")[1][0].cpus is None
    assert {spec.env["OMP_NUM_THREADS"] for spec in specs} == {str(max(1, cores // 2))}


# ---------------------------------------------------------------------------------------------------------------
# test/env_npu.sh


def sourced_environment(env, source=True):
    """The environment after sourcing env_npu.sh (or not); fails if the script prints anything."""
    script = 'source "{}" && env -0'.format(os.path.join(REPO_ROOT, "test", "env_npu.sh")) if source else "env -0"
    result = subprocess.run(["bash", "-c", script], capture_output=True, env=env)
    assert result.returncode == 0 and result.stderr == b""
    items = [item for item in result.stdout.split(b"\0") if item]
    assert all(b"=" in item for item in items)  # nothing but `env -0` output on stdout
    return dict(item.decode().split("=", 1) for item in items)


def test_env_npu_does_nothing_without_cann(tmp_path):
    if os.path.isdir("/usr/local/Ascend"):
        pytest.skip("CANN is installed at the default path on this machine")
    env = {"PATH": os.environ["PATH"], "ASCEND_INSTALL_INFO": str(tmp_path / "absent.info")}
    assert sourced_environment(env) == sourced_environment(env, source=False)


def test_env_npu_sources_set_env_from_the_install_path(tmp_path):
    toolkit = tmp_path / "Ascend" / "ascend-toolkit"
    toolkit.mkdir(parents=True)
    (toolkit / "set_env.sh").write_text("export FAKE_CANN_SOURCED=yes\n")
    info = tmp_path / "ascend_cann_install.info"
    info.write_text("Install_Path={}\n".format(tmp_path / "Ascend"))
    env = sourced_environment({"PATH": os.environ["PATH"], "ASCEND_INSTALL_INFO": str(info)})
    assert env["FAKE_CANN_SOURCED"] == "yes"
    assert {key: env[key] for key in ("ASCEND_SLOG_PRINT_TO_STDOUT", "ASCEND_GLOBAL_LOG_LEVEL",
                                      "ASCEND_GLOBAL_EVENT_ENABLE", "TASK_QUEUE_ENABLE", "PTCOPY_ENABLE",
                                      "COMBINED_ENABLE", "HCCL_WHITELIST_DISABLE")} == {
        "ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "ASCEND_GLOBAL_EVENT_ENABLE": "0",
        "TASK_QUEUE_ENABLE": "1", "PTCOPY_ENABLE": "1", "COMBINED_ENABLE": "1", "HCCL_WHITELIST_DISABLE": "1"}


# ---------------------------------------------------------------------------------------------------------------
# Launcher mechanics against a fake main.py

FAKE_MAIN = textwrap.dedent('''
    """Fake main.py: records argv and rank environment, prints ModelZoo lines on rank 0, fails or hangs on demand."""
    import json
    import os
    import signal
    import sys
    import time

    from training.logs import modelzoo_format

    behaviour = os.environ.get("FAKE_BEHAVIOUR", "ok")
    if "--check-only" in sys.argv:
        if behaviour == "check_fails":
            print("error: the training set has fewer images than one batch per process (8): lower --batch-size",
                  file=sys.stderr)
            sys.exit(2)
        sys.exit(0)
    rank = int(os.environ.get("RANK", "0"))
    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    print("ARGS " + json.dumps({"argv": sys.argv[1:], "env": env}), flush=True)
    if "FAKE_PID_FILE" in os.environ:
        with open(os.environ["FAKE_PID_FILE"] + str(rank), "w") as handle:
            handle.write(str(os.getpid()))
    if behaviour == "fail_rank1_stubborn" and rank == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like a rank stuck in a collective whose peer died
        time.sleep(120)
    if behaviour.startswith("fail_rank1"):
        if rank == 1:
            time.sleep(0.5)
            print("error: rank 1 broke")
            sys.exit(3)
        time.sleep(120)
    if behaviour == "hang":
        time.sleep(120)
    if behaviour == "no_figures":
        sys.exit(0)
    if rank == 0:
        head = modelzoo_format.prefix("cpu", 0)
        print(modelzoo_format.format_step(head, 0, 9, 10, [("Loss", 2.5, 2.75, ".4e")]))
        print(modelzoo_format.format_fps(head, 200.0, 0.08))
        print(modelzoo_format.format_acc(head, 12.5, 50.0))
    ''')

FAKE_DEVICE = textwrap.dedent('''
    """Stub of training/device.py for the launcher mechanics tests: no torch import; the machine is a CPU unless
    FAKE_DEVICE says e.g. "cuda 4"."""
    import os

    KIND, COUNT = os.environ.get("FAKE_DEVICE", "cpu 1").split()


    def resolve_device_type(name):
        return KIND


    def device_count(kind):
        return int(COUNT)
    ''')

FAKE_MODES = 'DEFAULT_PORT = 29688\n\n\ndef free_port():\n    return 45678\n'


@pytest.fixture
def fake_repo(tmp_path):
    """A copy of the launchers and the summary module next to a fake main.py."""
    root = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO_ROOT, "test"), str(root / "test"),
                    ignore=shutil.ignore_patterns("output"))
    os.makedirs(str(root / "tools"))
    for name in ("__init__.py", "modelzoo_summary.py", "modelzoo_launch.py"):
        shutil.copy(os.path.join(REPO_ROOT, "tools", name), str(root / "tools"))
    shutil.copytree(os.path.join(REPO_ROOT, "training"), str(root / "training"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "training" / "device.py").write_text(FAKE_DEVICE)
    (root / "training" / "launch" / "modes.py").write_text(FAKE_MODES)
    (root / "main.py").write_text(FAKE_MAIN)
    return str(root)


def recorded_calls(log_path):
    return [json.loads(line[5:]) for line in open(log_path) if line.startswith("ARGS ")]


def effective(call):
    """What the real main.py makes of the recorded command line (recipe defaults, then the explicit flags)."""
    return vars(main_options.parse_args(call["argv"]))


def test_defaults_are_the_originals_and_precision_maps_to_amp(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--output_root=" + out, "--nproc=2"],
                    repo=fake_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    rank0, = recorded_calls(os.path.join(out, "0", "train_0.log"))
    rank1, = recorded_calls(os.path.join(out, "1", "train_1.log"))
    args = effective(rank0)
    expected = {"arch": "shufflenet_v2_x1_0", "seed": 49, "eval_freq": 5, "batch_size": 8192, "lr": 4.0,
                "epochs": 240, "warm_up_epochs": 5, "momentum": 0.0, "weight_decay": 1e-4, "opt_level": "O2",
                "loss_scale": "64", "device": "cpu", "data": fake_repo, "local_rank": 0, "amp": True,
                "dummy": False, "recipe": "modelzoo_full_8p", "output_dir": os.path.join(out, "0")}
    assert {name: args[name] for name in expected} == expected
    assert rank0["env"] == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": "45678"}
    assert rank1["env"]["RANK"] == "1" and effective(rank1)["local_rank"] == 1
    values = modelzoo_summary.read_summary(
        os.path.join(out, "0", "Shufflenetv2_ID0099_for_PyTorch_bs8192_2p_acc.log"))
    assert values["ActualFPS"] == "200.000" and values["TrainAccuracy"] == "12.500"
    assert values["ActualLoss"] == "2.5000" and values["TrainingTime"] == "40.9600"


def test_paper_recipe_fp32_passthrough_and_master_port(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_full_1p.sh", ["--data_path=" + fake_repo, "--output_root=" + out, "--recipe=paper",
                                         "--precision_mode=must_keep_origin_dtype", "--epochs=3",
                                         "--checkpoint-freq=10", "--eval-freq=1"],
                    repo=fake_repo, env={"MASTER_PORT": "31313"})
    assert result.returncode == 0, result.stdout + result.stderr
    call, = recorded_calls(os.path.join(out, "0", "train_0.log"))
    args = effective(call)
    expected = {"batch_size": 1024, "lr": 0.5, "momentum": 0.9, "weight_decay": 4e-5, "warm_up_epochs": 0,
                "lr_schedule": "linear", "norm_weight_decay": 0.0, "bias_weight_decay": 0.0,
                "label_smoothing": 0.1, "color_jitter": 0.4, "bn_recalibrate": 1251, "epochs": 3,
                "checkpoint_freq": 10, "eval_freq": 1, "gpu": 0, "recipe": "paper", "amp": False, "local_rank": -1}
    assert {name: args[name] for name in expected} == expected
    assert "--local_rank" not in call["argv"]
    # 8p: MASTER_PORT from the environment reaches every rank
    result = launch("train_performance_8p.sh", ["--output_root=" + out], repo=fake_repo,
                    env={"MASTER_PORT": "31313"})
    assert result.returncode == 0, result.stdout + result.stderr
    call, = recorded_calls(os.path.join(out, "1", "train_1.log"))
    assert call["env"]["MASTER_PORT"] == "31313"
    args = effective(call)
    assert (args["batch_size"], args["steps_per_epoch"], args["dummy"]) == (16, 15, True)


def test_cpu_performance_run_scales_the_learning_rate_with_the_shrunk_batch(fake_repo):
    out = os.path.join(fake_repo, "out")

    def run(script, *args):
        result = launch(script, ["--output_root=" + out] + list(args), repo=fake_repo)
        assert result.returncode == 0, result.stdout + result.stderr
        call, = recorded_calls(os.path.join(out, "0", "train_0.log"))
        values = effective(call)
        return values["batch_size"], values["lr"], result.stdout

    batch, lr, stdout = run("train_performance_1p.sh")  # 1536 at lr 0.75 shrunk to 8
    assert (batch, lr) == (8, pytest.approx(0.75 * 8 / 1536))
    assert "learning rate scaled with the batch: 0.75 * 8 / 1536 = 0.00390625" in stdout
    batch, lr, _ = run("train_performance_8p.sh")  # 8192 at lr 4 shrunk to 8 per process, 2 CPU processes
    assert (batch, lr) == (16, pytest.approx(4 * 16 / 8192))
    batch, lr, stdout = run("train_performance_1p.sh", "--learning_rate=0.1")  # the user's lr is kept
    assert (batch, lr) == (8, 0.1) and "learning rate scaled" not in stdout
    batch, lr, stdout = run("train_performance_1p.sh", "--batch_size=16")  # no shrinking, no scaling
    assert (batch, lr) == (16, 0.75) and "learning rate scaled" not in stdout


def test_8p_on_four_gpus_uses_four_processes_and_keeps_the_per_device_batch(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_performance_8p.sh", ["--output_root=" + out], repo=fake_repo,
                    env={"FAKE_DEVICE": "cuda 4"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device cuda: 4 process(es), global batch 4096" in result.stdout
    calls = [recorded_calls(os.path.join(out, str(i), "train_{}.log".format(i)))[0] for i in range(4)]
    assert [call["env"]["RANK"] for call in calls] == ["0", "1", "2", "3"]
    assert {effective(call)["batch_size"] for call in calls} == {4096}
    assert {effective(call)["steps_per_epoch"] for call in calls} == {200}
    assert os.path.isfile(os.path.join(out, "0", "Shufflenetv2_ID0099_for_PyTorch_bs4096_4p_perf.log"))
    # full runs keep the recipe's global batch; asking for more processes than GPUs is an error
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--output_root=" + out, "--nproc=5"],
                    repo=fake_repo, env={"FAKE_DEVICE": "cuda 4"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --nproc=5 but only 4 cuda device(s) are visible"]


def test_second_node_of_a_multi_node_run(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--output_root=" + out, "--nnodes=2",
                                         "--node_rank=1", "--master_addr=192.0.2.7", "--batch_size=8"],
                    repo=fake_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [recorded_calls(os.path.join(out, str(i), "train_{}.log".format(i)))[0] for i in (0, 1)]
    assert [call["env"]["RANK"] for call in calls] == ["2", "3"]
    assert [call["env"]["LOCAL_RANK"] for call in calls] == ["0", "1"]
    assert {call["env"]["WORLD_SIZE"] for call in calls} == {"4"}
    assert {(call["env"]["MASTER_ADDR"], call["env"]["MASTER_PORT"]) for call in calls} == {("192.0.2.7", "29688")}
    assert "figures and the summary are on node 0" in result.stdout
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--nnodes=2"], repo=fake_repo)
    assert result.returncode == 2 and "--master_addr=IP" in result.stderr


@pytest.mark.smoke
def test_a_failing_rank_stops_the_others_and_fails_the_launch(fake_repo):
    out = os.path.join(fake_repo, "out")
    write_previous_run(os.path.join(out, "0"))
    start = time.time()
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--output_root=" + out],
                    repo=fake_repo, env={"FAKE_BEHAVIOUR": "fail_rank1"}, timeout=60)
    assert result.returncode == 3
    assert time.time() - start < 30  # rank 0 sleeps 120 s unless the launcher stops it
    # one line naming the rank and that rank's own error line, taken from its own log
    assert result.stderr.splitlines() == ["error: process 1 of 2 exited with code 3: rank 1 broke"]
    assert "no summary written" in result.stdout
    assert [name for name in os.listdir(os.path.join(out, "0")) if name.endswith("_acc.log")] == []
    assert_previous_run_kept(os.path.join(out, "0"))


def test_a_rank_deaf_to_sigterm_is_killed_after_the_grace_period(fake_repo, tmp_path):
    out = os.path.join(fake_repo, "out")
    pid_file = str(tmp_path / "pid")
    start = time.time()
    result = launch("train_full_8p.sh", ["--data_path=" + fake_repo, "--output_root=" + out], repo=fake_repo,
                    env={"FAKE_BEHAVIOUR": "fail_rank1_stubborn", "FAKE_PID_FILE": pid_file,
                         "LAUNCHER_STOP_GRACE_SECONDS": "1"}, timeout=60)
    assert result.returncode == 3
    assert time.time() - start < 30  # rank 0 ignores SIGTERM and sleeps 120 s
    assert "1 training process(es) still running 1 s after SIGTERM: killed" in result.stdout
    with pytest.raises(OSError):
        os.kill(int(open(pid_file + "0").read()), 0)


def test_ranks_die_when_the_launcher_is_sigkilled(fake_repo, tmp_path):
    """kill -9 of the launcher once left both ranks training."""
    out = os.path.join(fake_repo, "out")
    pid_file = str(tmp_path / "pid")
    env = dict(os.environ, FAKE_BEHAVIOUR="hang", FAKE_PID_FILE=pid_file)
    process = subprocess.Popen(["bash", os.path.join(fake_repo, "test", "train_full_8p.sh"),
                                "--data_path=" + fake_repo, "--output_root=" + out], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_files([pid_file + str(rank) for rank in (0, 1)])
    rank_pids = [int(open(pid_file + str(rank)).read()) for rank in (0, 1)]
    process.send_signal(signal.SIGKILL)  # the shim exec'd the launcher: this is the launcher's pid
    process.wait(timeout=30)
    deadline = time.time() + 20
    while not all(exited(pid) for pid in rank_pids) and time.time() < deadline:
        time.sleep(0.1)
    assert all(exited(pid) for pid in rank_pids), "ranks outlived the launcher"


def test_a_failed_check_moves_nothing(fake_repo):
    out = os.path.join(fake_repo, "out")
    write_previous_run(os.path.join(out, "0"))
    result = launch("train_full_1p.sh", ["--data_path=" + fake_repo, "--output_root=" + out], repo=fake_repo,
                    env={"FAKE_BEHAVIOUR": "check_fails"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the training set has fewer images than one batch per process (8): lower --batch-size"]
    assert_previous_run_untouched(os.path.join(out, "0"))


def wait_for_files(paths, seconds=30):
    deadline = time.time() + seconds
    while not all(os.path.exists(path) and open(path).read() for path in paths) and time.time() < deadline:
        time.sleep(0.1)
    return all(os.path.exists(path) for path in paths)


def exited(pid):
    """True once `pid` has exited (a zombie not yet reaped by its new parent counts as exited)."""
    try:
        with open("/proc/{}/status".format(pid)) as handle:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in handle)
    except OSError:
        return True


def test_an_interpreter_without_the_modules_is_one_line_error(fake_repo):
    with open(os.path.join(fake_repo, "training", "device.py"), "w") as handle:
        handle.write("import torch_that_is_not_installed\n")
    result = launch("train_performance_1p.sh", ["--output_root=" + os.path.join(fake_repo, "out")], repo=fake_repo,
                    env={"PYTHON": sys.executable})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: {} cannot load the modules of main.py (No module named "
                                          "'torch_that_is_not_installed'); set PYTHON=an interpreter with PyTorch"
                                          .format(sys.executable)]
    result = launch("train_performance_1p.sh", ["--output_root=" + os.path.join(fake_repo, "out")], repo=fake_repo,
                    env={"PYTHON": "/nonexistent/python3"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: PYTHON=/nonexistent/python3: no such interpreter"]


def test_finished_run_without_figures_fails_instead_of_writing_empty_ones(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_performance_1p.sh", ["--output_root=" + out], repo=fake_repo,
                    env={"FAKE_BEHAVIOUR": "no_figures"})
    assert result.returncode != 0
    assert "no '* FPS@all' line in the log" in result.stderr
    assert sorted(os.listdir(os.path.join(out, "0"))) == ["train_0.log"]


def test_ctrl_c_stops_every_rank(fake_repo, tmp_path):
    out = os.path.join(fake_repo, "out")
    pid_file = str(tmp_path / "pid")
    write_previous_run(os.path.join(out, "0"))
    env = dict(os.environ, FAKE_BEHAVIOUR="hang", FAKE_PID_FILE=pid_file)
    process = subprocess.Popen(["bash", os.path.join(fake_repo, "test", "train_performance_8p.sh"),
                                "--output_root=" + out], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not all(os.path.exists(pid_file + str(rank)) for rank in (0, 1)) and time.time() < deadline:
        time.sleep(0.2)
    rank_pids = [int(open(pid_file + str(rank)).read()) for rank in (0, 1)]
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in stdout
    for pid in rank_pids:
        with pytest.raises(OSError):
            os.kill(pid, 0)
    assert_previous_run_kept(os.path.join(out, "0"))


def test_a_new_run_moves_the_previous_runs_files_aside(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_performance_1p.sh", ["--output_root=" + out], repo=fake_repo)
    assert result.returncode == 0, result.stderr
    folder = os.path.join(out, "0")
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "metrics.jsonl"):  # as main.py would leave them
        with open(os.path.join(folder, name), "w") as handle:
            handle.write("run 1")
    # a resumed run keeps the checkpoints and metrics where they are, and moves the old log and summary aside
    result = launch("train_performance_1p.sh", ["--output_root=" + out, "--resume=" + folder], repo=fake_repo)
    assert result.returncode == 0, result.stderr
    first, = [name for name in os.listdir(folder) if name.startswith("previous-")]
    assert sorted(os.listdir(os.path.join(folder, first))) == ["Shufflenetv2_ID0099_for_PyTorch_bs8_1p_perf.log",
                                                               "train_0.log"]
    assert open(os.path.join(folder, "checkpoint.pth.tar")).read() == "run 1"
    # a fresh run moves everything of the previous run aside: nothing main.py would overwrite stays in place
    result = launch("train_performance_1p.sh", ["--output_root=" + out], repo=fake_repo)
    assert result.returncode == 0, result.stderr
    second, = [name for name in os.listdir(folder) if name.startswith("previous-") and name != first]
    assert sorted(os.listdir(os.path.join(folder, second))) == [
        "Shufflenetv2_ID0099_for_PyTorch_bs8_1p_perf.log", "checkpoint.pth.tar", "metrics.jsonl",
        "model_best.pth.tar", "train_0.log"]
    assert open(os.path.join(folder, second, "model_best.pth.tar")).read() == "run 1"
    assert "moved to " + os.path.join(folder, second) in result.stdout
    values = modelzoo_summary.read_summary(os.path.join(folder, "Shufflenetv2_ID0099_for_PyTorch_bs8_1p_perf.log"))
    assert values["ActualFPS"] == "200.000"
    # a run of another case name (batch 16) leaves only its own summary next to its log
    result = launch("train_performance_1p.sh", ["--output_root=" + out, "--batch_size=16"], repo=fake_repo)
    assert result.returncode == 0, result.stderr
    assert sorted(name for name in os.listdir(folder) if not name.startswith("previous-")) == [
        "Shufflenetv2_ID0099_for_PyTorch_bs16_1p_perf.log", "train_0.log"]
    third, = [name for name in os.listdir(folder) if name.startswith("previous-") and name not in (first, second)]
    assert sorted(os.listdir(os.path.join(folder, third))) == ["Shufflenetv2_ID0099_for_PyTorch_bs8_1p_perf.log",
                                                               "train_0.log"]


def test_modelzoo_switches_are_accepted_and_named_as_ignored(fake_repo):
    out = os.path.join(fake_repo, "out")
    result = launch("train_performance_1p.sh", ["--output_root=" + out, "--profiling=True", "--over_dump=False"],
                    repo=fake_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--profiling: accepted for ModelZoo compatibility, no effect here" in result.stdout
    call, = recorded_calls(os.path.join(out, "0", "train_0.log"))
    assert not any("dump" in arg or "profiling" in arg for arg in call["argv"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
