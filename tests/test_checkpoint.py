"""training/checkpoints/checkpoint.py: atomic writes, weights-only loading, RNG state, bad files."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torchvision

from training.checkpoints import checkpoint as ckpt
from training import seeding
from training.errors import UserError


def small_checkpoint():
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    # after the step: torch 1.8 BatchNorm replaces num_batches_tracked instead of updating it in place
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    args = {"arch": "shufflenet_v2_x0_5", "lr": 0.1, "sizes": (1, 2), "path": None}
    return model, ckpt.build_checkpoint(4, "shufflenet_v2_x0_5", wrapped, optimizer.state_dict(), np.float64(61.5),
                                        args, classes=["a", "b", "c"], amp_state={"scale": 64.0})


def test_checkpoint_loads_with_weights_only_into_torchvision(tmp_path):
    model, data = small_checkpoint()
    path = str(tmp_path / "checkpoint.pth.tar")
    ckpt.atomic_save(data, path)
    loaded = ckpt.torch_load(path)  # torch.load(weights_only=True), or the restricted unpickler on torch < 1.13
    assert loaded["epoch"] == 4 and type(loaded["best_acc1"]) is float and loaded["best_acc1"] == 61.5
    assert loaded["args"]["sizes"] == [1, 2] and loaded["classes"] == ["a", "b", "c"]
    fresh = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    fresh.load_state_dict(loaded["state_dict"])  # no "module." prefix left
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    assert [f for f in os.listdir(str(tmp_path))] == ["checkpoint.pth.tar"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    # the mode of any new file (mkstemp alone would make 0600, unreadable by the group)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask

    state_dict, meta = ckpt.load_model_weights(path)
    assert set(state_dict) == set(model.state_dict())
    assert meta["arch"] == "shufflenet_v2_x0_5" and meta["classes"] == ["a", "b", "c"]
    assert "state_dict" not in meta and "optimizer" not in meta and "rng" not in meta


def test_bare_state_dict_with_module_prefix(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = str(tmp_path / "bare.pth")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    state_dict, meta = ckpt.load_model_weights(path)
    assert meta == {} and sorted(state_dict) == ["bias", "weight"]


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pth.tar")
    ckpt.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)

    def broken_save(obj, stream):
        stream.write(b"half a file")
        raise KeyboardInterrupt()

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert os.listdir(str(tmp_path)) == ["checkpoint.pth.tar"]
    assert torch.equal(ckpt.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))


def test_bad_files_are_user_errors(tmp_path):
    _, data = small_checkpoint()
    good = str(tmp_path / "good.pth.tar")
    ckpt.atomic_save(data, good)
    truncated = str(tmp_path / "truncated.pth.tar")
    with open(good, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[: os.path.getsize(good) // 2])
    garbage = str(tmp_path / "garbage.pth.tar")
    with open(garbage, "wb") as dst:
        dst.write(os.urandom(1000))
    foreign = str(tmp_path / "foreign.pth.tar")
    torch.save({"epoch": 3, "weights": [1, 2]}, foreign)
    evil = str(tmp_path / "evil.pth.tar")
    with open(evil, "wb") as dst:
        pickle.dump(random.Random(), dst, protocol=2)  # an arbitrary object: refused by weights_only
    for path, message in [(str(tmp_path / "missing.pth.tar"), "^checkpoint not found: "),
                          (truncated, "damaged checkpoint"), (garbage, "not a PyTorch checkpoint"),
                          (foreign, "not a checkpoint: field 'state_dict' is missing"),
                          (evil, "not a safe checkpoint: it names random.Random")]:
        with pytest.raises(UserError, match=message) as info:
            ckpt.load_model_weights(path)
        assert "\n" not in str(info.value)


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = seeding.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    seeding.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_load_into_model_names_the_mismatch():
    model = torch.nn.Linear(2, 3)
    with pytest.raises(UserError, match=r"shape mismatch in weight \(\(2, 2\) vs \(3, 2\)\)"):
        ckpt.load_into_model(model, torch.nn.Linear(2, 2).state_dict(), "x.pth")
    with pytest.raises(UserError, match="missing bias"):
        ckpt.load_into_model(model, {"weight": torch.zeros(3, 2)}, "x.pth")
