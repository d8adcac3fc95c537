"""Training recipes as data: named sets of main.py flag defaults (argparse `dest` -> value).

`main.py --recipe NAME` applies `defaults(NAME)` as parser defaults, so flags given explicitly still win.
The ModelZoo rows are the original launchers' hyperparameters; "paper" is megvii's ShuffleNetV2 recipe.
"""
from training.errors import UserError

_MODELZOO = {"arch": "shufflenet_v2_x1_0", "seed": 49, "eval_freq": 5, "amp": True}
_PAPER_BN_BATCHES = 1251  # one pass over ImageNet's 1,281,167 training images at batch 1024

_TABLE = {
    "modelzoo_full_1p": dict(_MODELZOO, batch_size=1536, epochs=240, lr=0.75, warm_up_epochs=1, momentum=0.0,
                             weight_decay=3.0517578125e-05, workers=128),
    "modelzoo_performance_1p": dict(_MODELZOO, batch_size=1536, epochs=2, lr=0.75, warm_up_epochs=1, momentum=0.0,
                                    weight_decay=3.0517578125e-05, workers=128),
    "modelzoo_full_8p": dict(_MODELZOO, batch_size=8192, epochs=240, lr=4.0, warm_up_epochs=5, momentum=0.0,
                             weight_decay=1e-4, workers=184),
    "modelzoo_performance_8p": dict(_MODELZOO, batch_size=8192, epochs=1, lr=4.0, warm_up_epochs=5, momentum=0.0,
                                    weight_decay=1e-4),
    "paper": {"arch": "shufflenet_v2_x1_0", "batch_size": 1024, "epochs": 240, "lr": 0.5, "warm_up_epochs": 0,
              "momentum": 0.9, "weight_decay": 4e-5, "lr_schedule": "linear", "norm_weight_decay": 0.0,
              "bias_weight_decay": 0.0, "label_smoothing": 0.1, "color_jitter": 0.4,
              "bn_recalibrate": _PAPER_BN_BATCHES},
}

NAMES = tuple(sorted(_TABLE))


def defaults(name):
    """The flag defaults of recipe `name` (a new dict); UserError for an unknown name."""
    if name not in _TABLE:
        raise UserError("unknown --recipe {!r}; choose from: {}".format(name, ", ".join(NAMES)))
    return dict(_TABLE[name])
