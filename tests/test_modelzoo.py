"""training/launch/modelzoo.py: precision by --precision_mode and the device, the shrunk CPU performance run (its
warm-up and its message), the launcher context main.py sees, the pruning of old previous-* folders, and one
`error:` line for a mistyped flag."""
import os
import subprocess

import pytest
from conftest import REPO_ROOT

from training import options as main_options
from training.launch import modelzoo


def plan(args, mode="performance", scale="1p", kind="cpu", count=1):
    """(Launch, rank 0's main.py argv after the script path, the launcher's messages: its plan's notes and what
    it says later)."""
    said = []
    parsed, passthrough = modelzoo.parse_command_line(["--mode", mode, "--scale", scale] + args, {})
    probe = modelzoo.Probe(kind, count, 45678, 29688)
    nprocs, device_ids = modelzoo.choose_processes(parsed, probe)
    launch = modelzoo.Launch(parsed, probe, nprocs, device_ids, said.append, passthrough=passthrough)
    said.extend(launch.notes)
    return launch, launch.specs(passthrough, {})[0].argv[2:], said


@pytest.mark.parametrize("args, kind, amp, amp_dtype", [
    ([], "cpu", True, "auto"),  # the default: main.py's --amp, bf16 only on a CPU with native bf16
    (["--precision_mode=allow_mix_precision"], "cpu", True, "bfloat16"),  # given: bf16 forced
    (["--precision_mode=must_keep_origin_dtype"], "cpu", False, "auto"),
    ([], "cuda", True, "auto"),
    (["--precision_mode=allow_mix_precision"], "cuda", True, "auto"),  # apex / fp16 as always on accelerators
])
def test_precision_mode_maps_to_main_py(args, kind, amp, amp_dtype):
    _, argv, _ = plan(args, kind=kind)
    parsed = main_options.parse_args(argv)
    assert (parsed.amp, parsed.amp_dtype) == (amp, amp_dtype)
    main_options.check_args(parsed)  # main.py accepts the combination


@pytest.mark.parametrize("scale", ["1p", "8p"])
def test_cpu_performance_run_has_no_warning_about_its_own_recipe(scale):
    _, argv, said = plan([], scale=scale)
    parsed = main_options.parse_args(argv)
    assert (parsed.epochs, parsed.steps_per_epoch, parsed.warm_up_epochs) == (1, 15, 0.5)
    assert main_options.lr_warnings(parsed, main_options.given_dests(argv)) == []
    assert any(line.startswith("CPU: performance run of batch {}, 1 epoch(s) of 15 steps, 0.5 epoch(s) of "
                               "warm-up".format(8 if scale == "1p" else 16)) for line in said), said


def test_cpu_performance_run_still_warns_about_the_users_warm_up():
    _, argv, _ = plan(["--epochs=1"])
    parsed = main_options.parse_args(argv)
    assert (parsed.epochs, parsed.warm_up_epochs) == (1, 1)  # the recipe's warm-up in the user's 1 epoch
    warning, = [line for line in main_options.lr_warnings(parsed, main_options.given_dests(argv))
                if "--warm_up_epochs" in line]
    assert warning.startswith("warning: --warm_up_epochs 1 >= --epochs 1")
    _, argv, said = plan(["--warm_up_epochs=2"])
    assert main_options.parse_args(argv).warm_up_epochs == 2  # the user's value wins, and the message omits it
    assert not any("of warm-up" in line for line in said)


@pytest.mark.parametrize("form", [["--steps-per-epoch=3"], ["--steps-per-epoch", "3"]])
def test_the_cpu_message_names_the_steps_main_py_will_run(form):
    _, argv, said = plan(form, scale="8p")
    assert main_options.parse_args(argv).steps_per_epoch == 3
    assert argv.count("--steps-per-epoch") + sum(token.startswith("--steps-per-epoch=") for token in argv) == 1
    assert any("1 epoch(s) of 3 steps" in line for line in said) and not any("15 steps" in line for line in said)


def test_main_py_knows_it_was_started_by_the_launcher():
    launch, _, _ = plan([], scale="8p")
    env = launch.specs([], {})[1].env
    assert env[modelzoo.LAUNCHER_ENV] == "train_performance_8p.sh"
    assert modelzoo.started_by_launcher(env) and not modelzoo.started_by_launcher({})
    assert modelzoo.user_spelling("batch_size", "--batch-size", env) == "--batch_size"
    assert modelzoo.user_spelling("batch_size", "--batch-size", {}) == "--batch-size"


def make_previous(folder, name, case="perf"):
    path = os.path.join(folder, name)
    os.makedirs(path)
    with open(os.path.join(path, "Shufflenetv2_ID0099_for_PyTorch_bs8_1p_{}.log".format(case)), "w") as stream:
        stream.write("earlier run\n")
    return path


def test_only_the_last_performance_runs_are_kept(tmp_path):
    folder = str(tmp_path)
    performance = ["previous-20240101-0000{:02d}".format(second) for second in range(5)]
    performance += ["previous-20240101-000005-9", "previous-20240101-000005-10"]  # -10 is newer than -9
    for name in performance:
        make_previous(folder, name)
    full = make_previous(folder, "previous-20230101-000000", case="acc")  # older than all: a full run stays
    failed = os.path.join(folder, "previous-20230101-000001")  # no summary: cannot tell, stays
    os.makedirs(failed)
    other = os.path.join(folder, "previous-notes")
    os.makedirs(other)
    assert modelzoo.remove_old_performance_runs(folder, keep=5) == performance[:2]
    assert sorted(os.listdir(folder)) == sorted(performance[2:] + [os.path.basename(p) for p in (full, failed, other)])
    assert modelzoo.remove_old_performance_runs(folder, keep=5) == []


def test_setting_aside_a_run_prunes_and_says_so(tmp_path):
    launch, _, said = plan(["--output_root=" + str(tmp_path)])
    folder = launch.output_dir(0)
    for second in range(modelzoo.KEEP_PERFORMANCE_RUNS):
        make_previous(folder, "previous-20240101-0000{:02d}".format(second))
    with open(launch.log_path(0), "w") as stream:
        stream.write("the last run's log\n")
    with open(os.path.join(folder, "Shufflenetv2_ID0099_for_PyTorch_bs8_1p_perf.log"), "w") as stream:
        stream.write("the last run's summary\n")
    modelzoo.set_aside_previous_run(launch, [])
    kept = sorted(name for name in os.listdir(folder) if name.startswith("previous-"))
    assert len(kept) == modelzoo.KEEP_PERFORMANCE_RUNS and "previous-20240101-000000" not in kept
    assert open(os.path.join(folder, kept[-1], "train_0.log")).read() == "the last run's log\n"
    assert any(line.startswith("removed 1 older performance run folder(s) in {} (the last 5 are kept): "
                               "previous-20240101-000000".format(folder)) for line in said), said


def test_a_mistyped_launcher_flag_is_one_error_line(tmp_path):
    env = dict(os.environ)
    env.pop(modelzoo.LAUNCHER_ENV, None)
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "test", "train_performance_1p.sh"), "--batchsize=8",
                             "--output_root=" + str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    # the launcher names its interpreter after the device probe; its plan is said only for a valid launch
    assert result.returncode == 2
    assert [line.split(" python: ")[0] for line in result.stdout.splitlines()] == ["[train_performance_1p.sh]"]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: --device auto: torch_npu ")]
    assert errors == ["error: unknown flag --batchsize=8 (did you mean --batch_size?)"]
    assert os.listdir(str(tmp_path)) == []  # stopped before anything was moved or written
