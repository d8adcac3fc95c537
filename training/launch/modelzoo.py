"""The ModelZoo launcher behind test/train_{full,performance}_{1p,8p}.sh.

Each script sources test/env_npu.sh and runs `python3 -m training.launch.modelzoo --mode full|performance --scale 1p|8p
"$@"`. In order:
1. parse the ModelZoo flags (`--data_path= --batch_size= --learning_rate= --precision_mode= --device_id= --epochs=`
   and the dump/profiling switches, which are accepted and ignored) and main.py's spellings of them (`--data`,
   `-b`, `--lr`, ...); any other flag goes to main.py unchanged (`--flag=a b` is passed as `--flag a b`);
2. probe the device in a child interpreter (main.py's own functions), choose the processes and the recipe
   (training/recipes.py), shrink performance runs on a CPU;
3. run main.py once with `--check-only` (flags, data, batch against the data set): a launch that would fail at
   start-up stops here, before anything of an earlier run is touched;
4. move the previous run's files in each output folder into `previous-<time>/` (of those folders, the last
   KEEP_PERFORMANCE_RUNS that hold a performance run are kept, older performance runs removed);
5. start one main.py per rank with its own log `<output_root>/<device_id>/train_<device_id>.log` through
   training/launch/supervisor.py (one failed rank stops the others; Ctrl-C stops all; ranks die with the launcher);
6. write the summary with tools/modelzoo_summary.py and print its `Final ...` lines.
"""
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from training import recipes
from training.launch import supervisor
from training.checkpoints.files import make_folder, move_aside
from training.cli import Parser
from training.errors import EXIT_USER_ERROR, UserError, run_cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN_PY = os.path.join(REPO_ROOT, "main.py")
SUMMARY_MODULE = "tools.modelzoo_summary"  # run as `python -m` from REPO_ROOT, as the device probe
MODES = ("full", "performance")
SCALES = ("1p", "8p")
LAUNCHER_RECIPES = ("modelzoo", "paper")
DEVICES = ("auto", "npu", "cuda", "gpu", "cpu")
PRECISION_ARGS = {"allow_mix_precision": ["--amp", "--opt-level", "O2", "--loss-scale", "64"],
                  "must_keep_origin_dtype": []}
DEFAULT_PRECISION_MODE = "allow_mix_precision"
# allow_mix_precision given on a CPU: bf16 autocast even without native bf16 (by default main.py's --amp trains a
# CPU without native bf16 in fp32, where emulated bf16 is many times slower)
FORCED_CPU_AMP_ARGS = ["--amp-dtype", "bfloat16"]
# ModelZoo's dump and profiling switches: accepted so that ModelZoo tooling can call the scripts, no effect here.
IGNORED_MODELZOO_FLAGS = ("--over_dump", "--over_dump_path", "--data_dump_flag", "--data_dump_step",
                          "--profiling", "--start_step", "--stop_step", "--bin", "--fps_lag")
# Performance runs on CPU: shrunk so a launch ends in seconds on a small machine (9 s on 2 cores, docs/benchmarks.md).
CPU_PERF_BATCH_PER_PROCESS = 8
CPU_PERF_STEPS = 15
CPU_PERF_EPOCHS = 1
CPU_DEFAULT_PROCESSES = 2
MAX_PROCESSES_PER_NODE = 8
DEFAULT_GRACE_SECONDS = 20
# previous-<time>/ folders of performance runs kept per output folder (older ones are removed: throughput runs on
# synthetic data pile up otherwise); a full run's folder is never removed.
KEEP_PERFORMANCE_RUNS = 5
PERFORMANCE_SUMMARY_PATTERN = recipes.NETWORK + "_bs*_*p_perf.log"
PREVIOUS_FOLDER = re.compile(r"^previous-([0-9]{8}-[0-9]{6})(?:-([0-9]+))?$")
# main.py's spelling of the recipe keys the launcher may set itself.
MAIN_FLAGS = {"batch_size": "-b", "lr": "--lr", "epochs": "--epochs", "seed": "--seed", "eval_freq": "--eval-freq",
              "arch": "-a", "steps_per_epoch": "--steps-per-epoch", "workers": "-j",
              "warm_up_epochs": "--warm_up_epochs"}
# Performance runs on CPU: the warm-up keeps the recipe's share of the run, at most this much of it (the recipes'
# 1 of 2 and 5 of 1 epochs would otherwise fill the shrunk run of one epoch).
CPU_PERF_MAX_WARM_UP_SHARE = 0.5
# Set in the environment of every main.py the launcher starts (value: the script's name): main.py's messages then
# name the launcher's spelling of a flag (--batch_size for main.py's --batch-size) and suggest launcher flags.
LAUNCHER_ENV = "MODELZOO_LAUNCHER"
WHOLE_NUMBER = re.compile(r"^[0-9]+$")
NUMBER = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


class _Parser(Parser):
    """The one-line parser; a ModelZoo flag given without its value is told to use the `--flag=VALUE` form."""

    def error(self, message):
        missing = re.match(r"argument ([^/:\s]+)\S*: expected one argument", message)
        if missing:
            raise UserError("{0} needs a value: write {0}=VALUE".format(missing.group(1)))
        super().error(message)


def build_parser():
    p = _Parser(add_help=False, allow_abbrev=False, prog="launcher")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--scale", choices=SCALES, required=True)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--data_path", "--data", dest="data_path")
    p.add_argument("--batch_size", "--batch-size", "-b", dest="batch_size")
    p.add_argument("--learning_rate", "--lr", "--learning-rate", dest="learning_rate")
    p.add_argument("--epochs")
    p.add_argument("--precision_mode", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--recipe", default="modelzoo")
    p.add_argument("--output_root", default=os.path.join(REPO_ROOT, "test", "output"))
    p.add_argument("--dummy", action="store_true")
    p.add_argument("--device_id", "--gpu", dest="device_id")
    p.add_argument("--nproc", "--device_num", dest="nproc")
    p.add_argument("--nnodes")
    p.add_argument("--node_rank")
    p.add_argument("--master_addr")
    for flag in IGNORED_MODELZOO_FLAGS:
        p.add_argument(flag, nargs="?", const="True", dest="ignored_" + flag.lstrip("-"))
    return p


def launcher_flags():
    """The launcher's flags a user types, its own spellings first (for "did you mean" suggestions)."""
    internal = {"--mode", "--scale", "-h", "--help"} | set(IGNORED_MODELZOO_FLAGS)
    flags = []
    for position in (0, 1, 2):  # every flag's first (ModelZoo) spelling before any alias
        flags += [action.option_strings[position] for action in build_parser()._actions
                  if len(action.option_strings) > position]
    return [flag for flag in flags if flag not in internal]


def started_by_launcher(environ=None):
    """True in a main.py that a ModelZoo launcher started (LAUNCHER_ENV is set)."""
    return bool((os.environ if environ is None else environ).get(LAUNCHER_ENV))


def user_spelling(dest, main_flag, environ=None):
    """How the user spells a flag: the launcher's `--<dest>` (e.g. --batch_size) when this main.py was started by
    a launcher that has that flag, else main.py's `main_flag`."""
    if started_by_launcher(environ):
        for action in build_parser()._actions:
            if action.dest == dest and action.option_strings:
                return action.option_strings[0]
    return main_flag


def usage(mode, scale):
    if scale == "1p":
        scale_flags = ("  --device_id=N (--gpu)      device index and output folder name (default $ASCEND_DEVICE_ID "
                       "or 0)")
    else:
        scale_flags = ("  --nproc=N       (--device_num) processes, one per device (default: 8 NPUs, up to 8 GPUs, 2 on"
                       " CPU)\n  --nnodes=N --node_rank=K   several nodes: run the script on every node with its K "
                       "(0 on the master)\n  --master_addr=IP           address of node 0 (default $MASTER_ADDR, else "
                       "127.0.0.1 on one node)")
    data = "default: synthetic data" if mode == "performance" else "required"
    return """Usage: bash test/train_{mode}_{scale}.sh [--flag=value | --flag value ...]

{mode} run on {scale}: main.py with `--recipe {recipe}` (the ModelZoo original's hyperparameters) unless overridden.
  --data_path=DIR (--data)   ImageNet-style folder with train/ and val/ ({data})
  --batch_size=N  (-b)       global batch size over all processes
  --learning_rate=X (--lr)   peak learning rate
  --epochs=N                 epochs
  --precision_mode=MODE      allow_mix_precision (--amp --opt-level O2 --loss-scale 64) or
                             must_keep_origin_dtype (fp32). Default: allow_mix_precision, which on a CPU is bf16
                             autocast only where the CPU has native bf16 (avx512_bf16/amx_bf16), else fp32;
                             given explicitly on a CPU it forces bf16 autocast
  --device=D                 auto (default: npu if torch_npu works, else cuda, else cpu), npu, cuda, gpu or cpu
  --recipe=R                 modelzoo (default) or paper (ShuffleNetV2 paper / megvii recipe)
{scale_flags}
  --output_root=DIR          where the output folders go (default test/output); a run moves the previous one's
                             files into <folder>/previous-<time>/ and keeps the last {keep} performance runs there
  -h, --help                 this help
Performance runs on a CPU are shrunk (batch 8 per process, lr scaled, 1 epoch of 15 steps, at most half of it
warm-up) unless overridden.
ModelZoo's dump/profiling switches ({ignored}) are accepted and ignored.
Any other flag is passed to main.py unchanged and overrides the launcher's value,
e.g. --arch=shufflenet_v2_x0_5 --workers=8 --train-crop-scale=0.5 1.0 --resume=test/output/0/checkpoint.pth.tar.
Environment: PYTHON (interpreter, default python3), MASTER_ADDR / MASTER_PORT (default 127.0.0.1 / a free port),
LAUNCHER_STOP_GRACE_SECONDS (after one rank fails or Ctrl-C, seconds the others get to stop before SIGKILL; {grace}).
""".format(mode=mode, scale=scale, recipe=recipes.modelzoo_name(mode, scale), data=data, scale_flags=scale_flags,
           ignored=" ".join(IGNORED_MODELZOO_FLAGS), grace=DEFAULT_GRACE_SECONDS, keep=KEEP_PERFORMANCE_RUNS)


def normalize_passthrough(tokens):
    """`--flag=a b` becomes `--flag a b` (argparse refuses `=` for flags taking two values); `-bN` -> `-b N`."""
    result = []
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        takes_more = following is not None and (not following.startswith("-") or re.match(r"^-[0-9.]", following))
        if token.startswith("--") and "=" in token and takes_more:
            result.extend(token.split("=", 1))
        else:
            result.append(token)
    return result


def split_short_batch(argv):
    """`-b8` -> `-b 8` (Python 3.7's argparse does not split it with allow_abbrev=False)."""
    result = []
    for token in argv:
        if re.match(r"^-b[0-9]", token):
            result.extend(["-b", token[2:]])
        else:
            result.append(token)
    return result


def _check_given(options):
    for flag in ("data_path", "batch_size", "learning_rate", "epochs", "precision_mode", "device", "recipe",
                 "output_root", "device_id", "nproc", "nnodes", "node_rank", "master_addr"):
        if getattr(options, flag) == "":
            raise UserError("--{0} needs a value: write --{0}=VALUE".format(flag))
    wrong_scale = ["device_id"] if options.scale == "8p" else ["nproc", "nnodes", "node_rank", "master_addr"]
    for flag in wrong_scale:
        if getattr(options, flag) is not None:
            if flag == "device_id":
                raise UserError("--device_id is for the 1p scripts; use --nproc=N here")
            raise UserError("--{} is for the 8p scripts".format(flag))


def _whole_number(options, flag, default=None, minimum=0, what=None):
    value = getattr(options, flag)
    if value is None:
        return default
    if not WHOLE_NUMBER.match(value):
        raise UserError("--{}={} is not a whole number".format(flag, value))
    if int(value) < minimum:
        raise UserError("--{}={}: {}".format(flag, value, what))
    return int(value)


def grace_seconds(environ):
    text = environ.get("LAUNCHER_STOP_GRACE_SECONDS", str(DEFAULT_GRACE_SECONDS))
    if not NUMBER.match(text):
        raise UserError("LAUNCHER_STOP_GRACE_SECONDS={} is not a number of seconds".format(text))
    return float(text)


def check_options(options, environ):
    """Turn the parsed strings into checked values (in place); UserError naming the first bad one."""
    _check_given(options)
    options.batch_size = _whole_number(options, "batch_size", minimum=1, what="need at least one image per step")
    options.epochs = _whole_number(options, "epochs", minimum=1, what="need at least one epoch")
    options.device_id = _whole_number(options, "device_id", default=int(environ.get("ASCEND_DEVICE_ID") or 0))
    options.nproc = _whole_number(options, "nproc", minimum=1, what="need at least one process")
    options.nnodes = _whole_number(options, "nnodes", default=1, minimum=1, what="need at least one node")
    options.node_rank = _whole_number(options, "node_rank", default=0)
    options.master_addr = options.master_addr or environ.get("MASTER_ADDR") or None
    if options.learning_rate is not None and not NUMBER.match(options.learning_rate):
        raise UserError("--learning_rate={} is not a number".format(options.learning_rate))
    if options.node_rank >= options.nnodes:
        raise UserError("--node_rank={} must be below --nnodes={}".format(options.node_rank, options.nnodes))
    if options.nnodes > 1 and not options.master_addr:
        raise UserError("--nnodes={}: give node 0's address with --master_addr=IP (or MASTER_ADDR)".format(
            options.nnodes))
    if options.precision_mode is not None and options.precision_mode not in PRECISION_ARGS:
        raise UserError("unknown --precision_mode={}: use allow_mix_precision (AMP O2) or must_keep_origin_dtype "
                        "(fp32)".format(options.precision_mode))
    if options.device not in DEVICES:
        raise UserError("unknown --device={}: use {}".format(options.device, ", ".join(DEVICES)))
    if options.recipe not in LAUNCHER_RECIPES:
        raise UserError("unknown --recipe={}: use modelzoo (the original's hyperparameters) or paper".format(
            options.recipe))
    _check_data(options)
    options.grace_seconds = grace_seconds(environ)
    options.output_root = os.path.abspath(options.output_root)


def _check_data(options):
    if options.mode == "full" and options.dummy:
        raise UserError("--dummy: full runs train on data; give --data_path=DIR (synthetic data is for the "
                        "performance scripts)")
    if options.dummy and options.data_path:
        raise UserError("--dummy and --data_path={}: give one of them".format(options.data_path))
    if options.mode == "full" and not options.data_path:
        raise UserError("--data_path=DIR is required for full runs (an ImageNet-style folder with train/ and val/)")
    if options.data_path:
        if not os.path.isdir(options.data_path):
            raise UserError("--data_path={}: no such directory".format(options.data_path))
        options.data_path = os.path.abspath(options.data_path)


def parse_command_line(argv, environ):
    """(options, passthrough): checked launcher options and the flags for main.py, in their order."""
    options, passthrough = build_parser().parse_known_args(split_short_batch(argv))
    if options.help:
        return options, []
    check_options(options, environ)
    return options, normalize_passthrough(passthrough)


# ---------------------------------------------------------------------------------------------------------------
# Device, processes and hyperparameters


def print_probe(device):
    """In a child interpreter: print one JSON line of Probe's fields (main.py's own functions), or one error line
    and return 2. Kept out of the launcher process so that it never loads torch or holds a device."""
    try:
        import torch
        from training.device import device_count, resolve_device_type
        from training.launch.modes import DEFAULT_PORT, free_port
        from training.precision import amp_refusal
    except ImportError as error:
        print("error: {} cannot load the modules of main.py ({}); set PYTHON=an interpreter with PyTorch".format(
            sys.executable, error), file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        kind = resolve_device_type(device)
    except UserError as error:
        print("error: {}".format(error), file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps({"kind": kind, "count": device_count(kind), "free_port": free_port(), "default_port": DEFAULT_PORT,
                      "torch": torch.__version__, "amp_refusal": amp_refusal(kind)}))
    return 0


class Probe:
    """What the device probe found: kind ('npu', 'cuda', 'cpu'), count, a free port, main.py's default port, the
    interpreter's torch version and why --amp cannot run there (None: it can)."""

    def __init__(self, kind, count, free_port, default_port, torch="", amp_refusal=None):
        self.kind, self.count = kind, int(count)
        self.free_port, self.default_port = int(free_port), int(default_port)
        self.torch, self.amp_refusal = torch, amp_refusal


def probe_device(device):
    command = [sys.executable, "-c", "import sys; from training.launch.modelzoo import print_probe; "
               "sys.exit(print_probe(sys.argv[1]))", device]
    result = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(result.returncode)
    lines = result.stdout.strip().splitlines()
    try:
        return Probe(**json.loads(lines[-1]))  # the last line: plug-ins may print banners first
    except (IndexError, ValueError, TypeError):
        raise UserError("the device probe of {} printed no device line: {!r}".format(
            sys.executable, result.stdout)) from None


def choose_processes(options, probe):
    """(processes on this node, their device ids)."""
    if options.scale == "1p":
        return 1, [options.device_id]
    if options.nproc is not None:
        nprocs = options.nproc
    elif probe.kind == "cpu":
        nprocs = CPU_DEFAULT_PROCESSES
    else:
        nprocs = min(probe.count, MAX_PROCESSES_PER_NODE)
    if nprocs < 1:
        raise UserError("no {} device is visible".format(probe.kind))
    if probe.kind != "cpu" and nprocs > probe.count:
        raise UserError("--nproc={} but only {} {} device(s) are visible".format(nprocs, probe.count, probe.kind))
    return nprocs, list(range(nprocs))


class Launch:
    """Everything decided before the first process starts."""

    def __init__(self, options, probe, nprocs, device_ids, say, passthrough=()):
        """`passthrough`: the flags for main.py, whose values win over the launcher's (named in its messages)."""
        self.options, self.probe, self.say = options, probe, say
        self.passthrough = list(passthrough)
        self.notes = []  # what the plan changed, said once main.py --check-only accepted the launch
        self.nprocs, self.device_ids = nprocs, device_ids
        self.world = nprocs * options.nnodes
        self.base_recipe = recipes.modelzoo_name(options.mode, options.scale)
        self.recipe = self.base_recipe if options.recipe == "modelzoo" else options.recipe
        self.flags = self._launcher_values()
        self.precision_args = self._precision_args()
        self.values = dict(recipes.defaults(self.recipe), **self.flags)  # what main.py will use
        self.batch_size = self.values["batch_size"]
        if self.batch_size % self.world != 0:
            raise UserError("--batch_size={} is not divisible by {} processes".format(self.batch_size, self.world))
        self.summary_mode = "acc" if options.mode == "full" else "perf"
        self.case_name = recipes.case_name(self.batch_size, self.world, self.summary_mode)

    def _launcher_values(self):
        """The main.py values the launcher sets on top of the recipe (passed as explicit flags)."""
        options = self.options
        base = recipes.defaults(self.base_recipe)
        flags = {}
        if self.recipe != self.base_recipe:  # another recipe, the ModelZoo run around it
            flags.update({key: base[key] for key in ("arch", "seed", "eval_freq")})
            if options.mode == "performance":
                flags.update({key: base[key] for key in ("epochs", "steps_per_epoch")})
        lr = float(options.learning_rate) if options.learning_rate is not None else None
        for key, value in (("batch_size", options.batch_size), ("epochs", options.epochs), ("lr", lr)):
            if value is not None:
                flags[key] = value
        if options.mode == "performance":
            flags.update(self._performance_shape(dict(recipes.defaults(self.recipe), **flags)))
        flags["workers"] = self._workers()
        return flags

    def _performance_shape(self, values):
        """CPU: batch 8 per process with the lr scaled along, 1 epoch of 15 steps with the recipe's share of warm-up
        (see _cpu_performance_shape); NPU/GPU 8p on another device count: the original's per-device batch."""
        options, changes = self.options, {}
        if self.probe.kind == "cpu":
            changes = self._cpu_performance_shape(values)
        elif options.scale == "8p" and options.batch_size is None and self.world != MAX_PROCESSES_PER_NODE:
            per_device = values["batch_size"] // MAX_PROCESSES_PER_NODE
            changes["batch_size"] = per_device * self.world
            self.notes.append("{} processes: global batch {} keeps the original's {} images per device".format(
                self.world, changes["batch_size"], per_device))
        return changes

    def _cpu_performance_shape(self, values):
        """Batch 8 per process (lr scaled along), 1 epoch of 15 steps; the launcher's flags and main.py's
        --steps-per-epoch / --warm_up_epochs given by the user win, and the message says what the run does."""
        options, changes = self.options, {}
        batch = values["batch_size"]
        if options.batch_size is None:
            batch = CPU_PERF_BATCH_PER_PROCESS * self.world
            changes["batch_size"] = batch
            if options.learning_rate is None:
                changes["lr"] = float("{:.6g}".format(values["lr"] * batch / values["batch_size"]))
                self.notes.append("CPU: learning rate scaled with the batch: {:g} * {} / {} = {:g} (--learning_rate=X "
                                  "to set it)".format(values["lr"], batch, values["batch_size"], changes["lr"]))
        steps = passthrough_value(self.passthrough, "--steps-per-epoch")
        if steps is None:
            steps = changes["steps_per_epoch"] = CPU_PERF_STEPS
        warm_up = ""
        if options.epochs is None:
            changes["epochs"] = CPU_PERF_EPOCHS
            share = values.get("warm_up_epochs", 0) / values["epochs"]
            if share > 0 and passthrough_value(self.passthrough, "--warm_up_epochs", "--warmup-epochs") is None:
                changes["warm_up_epochs"] = CPU_PERF_EPOCHS * min(share, CPU_PERF_MAX_WARM_UP_SHARE)
                warm_up = ", {:g} epoch(s) of warm-up".format(changes["warm_up_epochs"])
        self.notes.append("CPU: performance run of batch {}, {} epoch(s) of {} steps{} (seconds on a 2-core CPU at the "
                          "launcher's sizes); CPU figures, not comparable with NPU/GPU ones".format(
                              batch, changes.get("epochs", options.epochs), steps, warm_up))
        return changes

    def _workers(self):
        """The original's worker count is for the whole node, main.py's -j per process; never more than cores."""
        cores = os.cpu_count() or 1
        node = recipes.NODE_WORKERS[self.base_recipe] or cores
        return max(1, min(node, cores) // self.nprocs)

    def port(self, environ):
        if environ.get("MASTER_PORT"):
            return environ["MASTER_PORT"]
        return str(self.probe.default_port if self.options.nnodes > 1 else self.probe.free_port)

    def output_dir(self, device_id):
        return os.path.join(self.options.output_root, str(device_id))

    def log_path(self, device_id):
        return os.path.join(self.output_dir(device_id), "train_{}.log".format(device_id))

    def main_argv(self, local_rank, passthrough):
        """main.py's command line for one rank: fixed flags, the recipe, the launcher's values, the user's flags."""
        options = self.options
        argv = [sys.executable, MAIN_PY, "--recipe", self.recipe, "--device", self.probe.kind,
                "--output-dir", self.output_dir(self.device_ids[0])]
        argv += ["--data", options.data_path] if options.data_path else ["--dummy"]
        for key in sorted(self.flags):
            argv += [MAIN_FLAGS[key], str(self.flags[key])]
        argv += self.precision_args
        if self.world > 1:
            argv += ["--local_rank", str(local_rank)]
        else:
            argv += ["--gpu", str(self.device_ids[local_rank])]
        return argv + list(passthrough)

    def _precision_args(self):
        """main.py's precision flags for --precision_mode. An explicit allow_mix_precision on a CPU forces bf16
        (FORCED_CPU_AMP_ARGS), except where this torch has no CPU autocast: then --amp alone (fp32, said in one
        line by main.py) and a line here."""
        mode = self.options.precision_mode or DEFAULT_PRECISION_MODE
        forced = self.options.precision_mode == "allow_mix_precision" and self.probe.kind == "cpu"
        if forced and self.probe.amp_refusal:
            self.notes.append("--precision_mode=allow_mix_precision cannot force bf16 here: {}".format(
                self.probe.amp_refusal))
            forced = False
        return PRECISION_ARGS[mode] + (FORCED_CPU_AMP_ARGS if forced else [])

    def rank_env(self, local_rank, environ):
        env = dict(environ)
        env.setdefault("OMP_NUM_THREADS", str(supervisor.threads_per_process(self.nprocs)))
        env[LAUNCHER_ENV] = "train_{}_{}.sh".format(self.options.mode, self.options.scale)
        if self.world > 1:
            env.update(RANK=str(self.options.node_rank * self.nprocs + local_rank), LOCAL_RANK=str(local_rank),
                       WORLD_SIZE=str(self.world), LOCAL_WORLD_SIZE=str(self.nprocs),
                       MASTER_ADDR=self.options.master_addr or "127.0.0.1", MASTER_PORT=self.port(environ))
        return env

    def specs(self, passthrough, environ, machine=None):
        """One supervisor.ProcessSpec per rank; on aarch64 each rank is bound to its nproc/N cores."""
        bind = (machine or platform.machine()) == "aarch64" and self.nprocs > 1
        return [supervisor.ProcessSpec(argv=self.main_argv(rank, passthrough), env=self.rank_env(rank, environ),
                                       log_path=self.log_path(self.device_ids[rank]),
                                       cpus=supervisor.cpu_share(rank, self.nprocs) if bind else None)
                for rank in range(self.nprocs)]


# ---------------------------------------------------------------------------------------------------------------
# Before and after the run


def check_with_main(spec):
    """main.py --check-only with rank 0's command line: flags, data and batch checked before anything is moved."""
    code = subprocess.call(spec.argv + ["--check-only"], env=spec.env)
    if code != 0:
        raise SystemExit(code)


def resumes(passthrough):
    return any(token == "--resume" or token.startswith("--resume=") for token in passthrough)


def passthrough_value(passthrough, *spellings):
    """The last value given to main.py's flag (any of its `spellings`) in `passthrough` (normalized: `--flag=a`
    or `--flag a`), else None."""
    value = None
    for index, token in enumerate(passthrough):
        name, equals, given = token.partition("=")
        if name in spellings:
            value = given if equals else (passthrough[index + 1] if index + 1 < len(passthrough) else None)
    return value


def set_aside_previous_run(launch, passthrough):
    """Move the previous run's files into <dir>/previous-<time>/: its logs and summaries of any case name and,
    unless this run resumes, its checkpoints and metrics.jsonl (main.py would overwrite them). Then only the last
    KEEP_PERFORMANCE_RUNS of the folders that hold a performance run stay."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for index, device_id in enumerate(launch.device_ids):
        folder = launch.output_dir(device_id)
        make_folder(folder)
        files = [launch.log_path(device_id)] + sorted(glob.glob(os.path.join(folder, recipes.SUMMARY_PATTERN)))
        if index == 0 and not resumes(passthrough):
            files += sorted(glob.glob(os.path.join(folder, "*.pth.tar"))) + [os.path.join(folder, "metrics.jsonl")]
        target = move_aside(folder, files, stamp)
        if target:
            launch.say("the previous run's files in {} were moved to {}".format(folder, target))
        removed = remove_old_performance_runs(folder)
        if removed:
            launch.say("removed {} older performance run folder(s) in {} (the last {} are kept): {}".format(
                len(removed), folder, KEEP_PERFORMANCE_RUNS, " ".join(removed)))


def remove_old_performance_runs(folder, keep=KEEP_PERFORMANCE_RUNS):
    """Remove the previous-<time>/ folders of `folder` that hold a performance run's summary (*_perf.log), all
    but the newest `keep`; returns their names, oldest first. Other folders (full runs, failed runs) stay."""
    performance = sorted(_previous_run_order(name) for name in os.listdir(folder)
                         if PREVIOUS_FOLDER.match(name) and _holds_performance_summary(os.path.join(folder, name)))
    removed = [name for _, _, name in performance[:max(0, len(performance) - keep)]]
    for name in removed:
        shutil.rmtree(os.path.join(folder, name))
    return removed


def _holds_performance_summary(path):
    return os.path.isdir(path) and bool(glob.glob(os.path.join(path, PERFORMANCE_SUMMARY_PATTERN)))


def _previous_run_order(name):
    """(time stamp, collision number, name): previous-20240102-030405-10 after previous-20240102-030405-9."""
    match = PREVIOUS_FOLDER.match(name)
    return match.group(1), int(match.group(2) or 0), name


def write_summary(launch, seconds):
    first = launch.device_ids[0]
    command = [sys.executable, "-m", SUMMARY_MODULE, launch.log_path(first), "--network", recipes.NETWORK,
               "--rank-size", str(launch.world), "--batch-size", str(launch.batch_size),
               "--mode", launch.summary_mode, "--e2e-seconds", str(int(seconds)),
               "--output-dir", launch.output_dir(first)]
    return 0 if subprocess.call(command, cwd=REPO_ROOT) == 0 else 1


def announce(launch):
    options, say = launch.options, launch.say
    if not options.data_path:
        say("no --data_path: synthetic data (--dummy), for throughput only")
    nodes = ""
    if options.nnodes > 1:
        nodes = " on node {} of {} ({} in all, master {}:{})".format(options.node_rank, options.nnodes, launch.world,
                                                                     options.master_addr, launch.port(os.environ))
    say("device {}: {} process(es){}, global batch {}, recipe {}, precision {}".format(
        launch.probe.kind, launch.nprocs, nodes, launch.batch_size, options.recipe,
        options.precision_mode or DEFAULT_PRECISION_MODE + " (default)"))
    for flag in IGNORED_MODELZOO_FLAGS:
        if getattr(options, "ignored_" + flag.lstrip("-")) is not None:
            say("{}: accepted for ModelZoo compatibility, no effect here".format(flag))
    for device_id in launch.device_ids:
        say("log: {}".format(launch.log_path(device_id)))
    say("follow the training with: tail -f {}".format(launch.log_path(launch.device_ids[0])))


class Say:
    """Prints launcher messages as `[train_full_8p.sh] ...`."""

    def __init__(self, script):
        self.script = script

    def __call__(self, message):
        print("[{}] {}".format(self.script, message), flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options, passthrough = parse_command_line(argv, os.environ)
    if options.help:
        print(usage(options.mode, options.scale), end="")
        return 0
    say = Say("train_{}_{}.sh".format(options.mode, options.scale))
    probe = probe_device(options.device)
    say("python: {} with torch {}".format(sys.executable, probe.torch))  # the interpreter every rank runs
    nprocs, device_ids = choose_processes(options, probe)
    launch = Launch(options, probe, nprocs, device_ids, say, passthrough=passthrough)
    specs = launch.specs(passthrough, os.environ)
    check_with_main(specs[0])  # a bad flag or data set ends here with main.py's one error line
    for note in launch.notes:
        say(note)
    set_aside_previous_run(launch, passthrough)
    announce(launch)
    start = time.time()
    code = supervisor.supervise(specs, grace_seconds=options.grace_seconds)
    seconds = time.time() - start
    if code != 0:
        if code != 130:
            say("no summary written; each rank's full log is in {}/<device_id>/".format(options.output_root))
        return code
    if options.node_rank != 0:
        say("node {} finished; the figures and the summary are on node 0".format(options.node_rank))
        return 0
    return write_summary(launch, seconds)


if __name__ == "__main__":
    sys.exit(run_cli(main))
