"""Training recipes as data: named sets of main.py defaults, applied with `main.py --recipe NAME`.

A recipe maps main.py's argparse `dest` names to values; main.py installs them with `parser.set_defaults` before
its final parse, so a flag given on the command line always wins over the recipe. The ModelZoo recipes are the
hyperparameters of the original's four launchers (test/train_{full,performance}_{1p,8p}.sh); "paper" is the
ShuffleNetV2 paper / megvii recipe. Precision is not part of a recipe: the launchers choose it from
--precision_mode (main.py: --amp).

The ModelZoo names the launchers and tools/modelzoo_summary.py share (network, case name) live here too.
"""
NETWORK = "Shufflenetv2_ID0099_for_PyTorch"
# The summary files a launch leaves next to the logs: <NETWORK>_bs<batch>_<ranks>p_<perf|acc>.log.
SUMMARY_PATTERN = NETWORK + "_bs*_*p_*.log"

# Paper recipe, last step: recompute BatchNorm statistics over one pass of ImageNet's 1,281,167 training images at
# batch 1024 (1251 batches, megvii's "one pass at lr 0"); it costs less than half an epoch of a 240-epoch run.
PAPER_BN_BATCHES = 1251

_MODELZOO_COMMON = {"arch": "shufflenet_v2_x1_0", "seed": 49, "eval_freq": 5}
_MODELZOO_1P = dict(_MODELZOO_COMMON, batch_size=1536, lr=0.75, warm_up_epochs=1, momentum=0.0,
                    weight_decay=3.0517578125e-05)
_MODELZOO_8P = dict(_MODELZOO_COMMON, batch_size=8192, lr=4.0, warm_up_epochs=5, momentum=0.0, weight_decay=1e-4)
# Performance runs on NPU/GPU: steps per epoch (main.py excludes the first steps from FPS@all).
_PERFORMANCE_STEPS = 200

_TABLE = {
    "modelzoo_full_1p": dict(_MODELZOO_1P, epochs=240),
    "modelzoo_performance_1p": dict(_MODELZOO_1P, epochs=2, steps_per_epoch=_PERFORMANCE_STEPS),
    "modelzoo_full_8p": dict(_MODELZOO_8P, epochs=240),
    "modelzoo_performance_8p": dict(_MODELZOO_8P, epochs=1, steps_per_epoch=_PERFORMANCE_STEPS),
    "paper": {"batch_size": 1024, "lr": 0.5, "epochs": 240, "warm_up_epochs": 0, "momentum": 0.9,
              "weight_decay": 4e-5, "lr_schedule": "linear", "norm_weight_decay": 0.0, "bias_weight_decay": 0.0,
              "label_smoothing": 0.1, "color_jitter": 0.4, "bn_recalibrate": PAPER_BN_BATCHES},
}
NAMES = tuple(sorted(_TABLE))

# Data loading workers of the original's launchers, for the whole node (None: one per core). main.py's --workers
# is per process, so this is not a main.py default: the launchers divide it by their processes.
NODE_WORKERS = {"modelzoo_full_1p": 128, "modelzoo_performance_1p": 128, "modelzoo_full_8p": 184,
                "modelzoo_performance_8p": None}


def defaults(name):
    """A copy of recipe `name`'s main.py defaults ({dest: value}); ValueError naming the choices otherwise."""
    if name not in _TABLE:
        raise ValueError("unknown recipe {!r}; choose from: {}".format(name, ", ".join(NAMES)))
    return dict(_TABLE[name])


def modelzoo_name(mode, scale):
    """'modelzoo_full_8p' for mode 'full' and scale '8p'."""
    return "modelzoo_{}_{}".format(mode, scale)


def case_name(batch_size, rank_size, mode, network=NETWORK):
    """`Shufflenetv2_ID0099_for_PyTorch_bs8192_8p_acc`, the original's naming (mode: 'perf' or 'acc')."""
    return "{}_bs{}_{}p_{}".format(network, batch_size, rank_size, mode)
