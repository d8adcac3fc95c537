"""training/recipes.py against the ModelZoo launchers' published defaults, and main.py's --recipe."""
import pytest

import main
from training import options
from training import recipes

# The ModelZoo original's launchers (seed 49, arch shufflenet_v2_x1_0, eval-freq 5 in all four).
MODELZOO = {
    "modelzoo_full_1p": {"batch_size": 1536, "epochs": 240, "lr": 0.75, "warm_up_epochs": 1, "momentum": 0.0,
                         "weight_decay": 3.0517578125e-05},
    "modelzoo_performance_1p": {"batch_size": 1536, "epochs": 2, "lr": 0.75, "warm_up_epochs": 1, "momentum": 0.0,
                                "weight_decay": 3.0517578125e-05, "steps_per_epoch": 200},
    "modelzoo_full_8p": {"batch_size": 8192, "epochs": 240, "lr": 4.0, "warm_up_epochs": 5, "momentum": 0.0,
                         "weight_decay": 1e-4},
    "modelzoo_performance_8p": {"batch_size": 8192, "epochs": 1, "lr": 4.0, "warm_up_epochs": 5, "momentum": 0.0,
                                "weight_decay": 1e-4, "steps_per_epoch": 200},
}
PAPER = {"batch_size": 1024, "lr": 0.5, "epochs": 240, "warm_up_epochs": 0, "momentum": 0.9, "weight_decay": 4e-5,
         "lr_schedule": "linear", "norm_weight_decay": 0.0, "bias_weight_decay": 0.0, "label_smoothing": 0.1,
         "color_jitter": 0.4, "bn_recalibrate": 1251}


def test_the_table_holds_the_modelzoo_defaults_and_the_paper_recipe():
    assert set(recipes.NAMES) == set(MODELZOO) | {"paper"}
    for name, expected in MODELZOO.items():
        assert recipes.defaults(name) == dict(expected, arch="shufflenet_v2_x1_0", seed=49, eval_freq=5)
    assert recipes.defaults("paper") == PAPER
    assert recipes.NODE_WORKERS == {"modelzoo_full_1p": 128, "modelzoo_performance_1p": 128,
                                    "modelzoo_full_8p": 184, "modelzoo_performance_8p": None}
    assert recipes.case_name(8192, 8, "acc") == "Shufflenetv2_ID0099_for_PyTorch_bs8192_8p_acc"


def test_defaults_returns_a_copy_and_names_the_choices():
    recipes.defaults("paper")["lr"] = 99.0
    assert recipes.defaults("paper")["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose from: modelzoo_full_1p"):
        recipes.defaults("fast")


@pytest.mark.parametrize("name", sorted(MODELZOO) + ["paper"])
def test_every_recipe_key_is_a_main_py_flag_and_explicit_flags_win(name):
    args = vars(options.parse_args(["--dummy", "--recipe", name]))
    assert {key: args[key] for key in recipes.defaults(name)} == recipes.defaults(name)
    assert args["recipe"] == name
    explicit = vars(options.parse_args(["--recipe", name, "--dummy", "-b", "8", "--lr=0.1"]))
    assert (explicit["batch_size"], explicit["lr"]) == (8, 0.1)


def test_no_recipe_keeps_main_py_defaults():
    args = vars(options.parse_args(["--dummy"]))
    assert args["recipe"] is None and (args["batch_size"], args["lr"], args["momentum"]) == (1024, 0.5, 0.9)


def test_main_check_only_validates_and_exits_without_training(tmp_path, capsys):
    from tests.datasets import make_image_folder
    data = make_image_folder(str(tmp_path / "data"), classes=2, train_per_class=4, val_per_class=2)
    out = tmp_path / "out"
    assert main.main(["--recipe", "paper", "--data", data, "-b", "8", "--device", "cpu", "--check-only",
                      "--output-dir", str(out)]) == 0
    assert not out.exists()  # nothing written
    assert main.main(["--recipe", "paper", "--data", data, "-b", "16", "--device", "cpu", "--check-only"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: the training set has 8 images, fewer than one batch (--batch-size=16): lower it"]
