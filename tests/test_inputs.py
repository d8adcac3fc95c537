"""training/data/inputs.py: --dummy's default epoch length, and the one-line error for a batch larger than the
training set, which says how many images each process got and spells the flag as the user typed it."""
import pytest
import torch

from training.data import inputs
from training.errors import UserError
from training.launch import modelzoo
from training.launch import modes
from training import options


def build_dummy(argv):
    args = options.parse_args(["--dummy", "-a", "shufflenet_v2_x0_5", "--train-crop-size", "32", "-b", "4",
                               "--seed", "1"] + argv)
    return args, inputs.build(args, modes.context({}), torch.device("cpu"))


def test_dummy_epochs_have_a_sensible_default_length():
    args, data = build_dummy([])
    assert len(data.train) == inputs.DUMMY_STEPS_PER_EPOCH
    assert inputs.steps_per_epoch(args, len(data.train), 1, images=data.train_images) == 100
    args, data = build_dummy(["--steps-per-epoch", "3"])
    assert len(data.train) == 3


def args_with(batch_size):
    return options.parse_args(["--dummy", "-b", str(batch_size)])


@pytest.mark.parametrize("environ, flag", [({}, "--batch-size"), ({modelzoo.LAUNCHER_ENV: "train_full_8p.sh"},
                                                                   "--batch_size")])
def test_a_batch_larger_than_the_data_names_the_images_and_the_users_flag(monkeypatch, environ, flag):
    monkeypatch.delenv(modelzoo.LAUNCHER_ENV, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as one:
        inputs.steps_per_epoch(args_with(16), 0, 1, images=12)
    assert str(one.value) == "the training set has 12 images, fewer than one batch ({}=16): lower it".format(flag)
    with pytest.raises(UserError) as two:
        inputs.steps_per_epoch(args_with(16), 0, 2, images=13)
    assert str(two.value) == ("the training set has 13 images, 7 per process, fewer than one batch per process "
                              "(8: {}=16 over 2 processes): lower it".format(flag))
    assert inputs.steps_per_epoch(args_with(4), 3, 1, images=13) == 3
