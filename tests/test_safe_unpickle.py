"""Checkpoint loading runs nothing a file asks for, on every torch: torch's weights_only loader (torch >= 1.13) and
the restricted unpickler of training/checkpoints/safe_unpickle.py (torch < 1.13, and forced here on newer torch too)
refuse a
pickle that would run a command, with one `error:` line from main.py --resume and tools/demo.py; real main.py
checkpoints (zipfile and legacy format) and torchvision state_dicts still load; malformed fields are named."""
import builtins
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, tiny_run_args

import main
from training.checkpoints import checkpoint as ckpt
from training import compat, seeding
from training.errors import UserError

TINY = tiny_run_args("-b", "4", workers=1)
IMAGE_FOLDER = dict(classes=2, train_per_class=2, val_per_class=1)  # data_root's shape (conftest.py)


class Payload:
    """Unpickling this calls `command(*arguments)`: each one would create the marker file."""

    def __init__(self, command, arguments):
        self.command, self.arguments = command, arguments

    def __reduce__(self):
        return self.command, self.arguments


def payloads(marker):
    """(payload, the dotted names its callable may be reported as) for several ways of running code. Pickle
    protocol 2 stores some Python 3 names under their Python 2 names (subprocess.call as commands.call); torch's
    own message leaves out `builtins.`."""
    code = "open({!r}, 'w').close()".format(marker)
    return [
        (Payload(os.system, ("touch " + marker,)), (os.system.__module__ + ".system",)),
        (Payload(subprocess.call, (["touch", marker],)), ("subprocess.call", "commands.call")),
        (Payload(builtins.exec, (code,)), ("builtins.exec", "__builtin__.exec", "exec")),
        (Payload(builtins.eval, (code,)), ("builtins.eval", "__builtin__.eval", "eval")),
    ]


def save(obj, path, fmt):
    """torch.save in the zipfile format (torch >= 1.6 default), the legacy format (torch 1.5's), or plain pickle."""
    if fmt == "pickle":
        with open(path, "wb") as stream:
            pickle.dump(obj, stream, protocol=2)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zipfile"))


@pytest.fixture(params=["torch default", "restricted unpickler"])
def loader(request, monkeypatch):
    """Load the way this torch does by default, then through the restricted unpickler even where weights_only
    exists, so both loaders are tested on every torch."""
    if request.param == "restricted unpickler":
        monkeypatch.setattr(ckpt, "_HAS_WEIGHTS_ONLY", False)
    return request.param


def evil_checkpoint(payload):
    """A checkpoint that looks normal but for one field."""
    return {"epoch": 1, "arch": "shufflenet_v2_x0_5", "best_acc1": 0.0, "args": {"note": payload},
            "state_dict": {"w": torch.ones(2)}}


def full_load(path):
    """torch.load with a full unpickle, as the loader did on torch < 1.13 before this fix."""
    return torch.load(path, map_location="cpu", **({"weights_only": False} if ckpt._HAS_WEIGHTS_ONLY else {}))


def test_payloads_are_live(tmp_path):
    """Without the fix (a full unpickle) each payload creates its marker: the refusals below mean something."""
    for index, (payload, _) in enumerate(payloads(str(tmp_path / "marker"))):
        path = str(tmp_path / "evil{}.pth".format(index))
        save(evil_checkpoint(payload), path, "zipfile")
        full_load(path)
        assert os.path.exists(str(tmp_path / "marker"))
        os.remove(str(tmp_path / "marker"))


@pytest.mark.smoke
@pytest.mark.parametrize("fmt", ["zipfile", "legacy", "pickle"])
def test_code_in_a_checkpoint_is_never_run(tmp_path, loader, fmt):
    marker = str(tmp_path / "marker")
    for index, (payload, global_names) in enumerate(payloads(marker)):
        path = str(tmp_path / "evil{}.pth.tar".format(index))
        save(evil_checkpoint(payload), path, fmt)
        with pytest.raises(UserError) as info:
            ckpt.load_checkpoint(path)
        assert str(info.value) in ["{} is not a safe checkpoint: it names {}, which a checkpoint never holds (only "
                                   "tensors, numbers, strings, lists and dicts); nothing in it was run".format(
                                       path, name) for name in global_names]
        assert not os.path.exists(marker)
        with pytest.raises(UserError, match="not a safe checkpoint"):
            ckpt.load_model_weights(path)
        assert not os.path.exists(marker)


def run(argv):
    return subprocess.run([sys.executable] + argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zipfile", "legacy"])
def test_main_resume_and_demo_refuse_a_command_in_a_checkpoint(tmp_path, data_root, fmt):
    marker = str(tmp_path / "marker")
    evil = str(tmp_path / "checkpoint.pth.tar")
    save(evil_checkpoint(Payload(os.system, ("touch " + marker,))), evil, fmt)
    result = run(["main.py", "--data", data_root, "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                  "--resume", evil] + TINY)
    assert_one_error_line(result, evil, "not a safe checkpoint", "system")
    assert not os.path.exists(marker)
    image = os.path.join(data_root, "val", "class_0", "val_0.jpg")
    result = run(["-m", "tools.demo", evil, image])
    assert_one_error_line(result, evil, "not a safe checkpoint", "system")
    assert not os.path.exists(marker)


def same(left, right):
    """Recursive equality with tensors compared by value and dtype."""
    if torch.is_tensor(left):
        return torch.is_tensor(right) and left.dtype == right.dtype and compat.tensors_equal(left, right)
    if isinstance(left, dict):
        return isinstance(right, dict) and set(left) == set(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return type(left) is type(right) and len(left) == len(right) and all(map(same, left, right))
    return type(left) is type(right) and left == right


@pytest.mark.slow
def test_main_checkpoint_resumes_in_both_formats(tmp_path, data_root, monkeypatch):
    """A checkpoint main.py wrote (optimizer, RNG, args, classes) loads through the restricted unpickler exactly as
    a full unpickle gives it, and --resume continues from it in the zipfile and the legacy format."""
    first = str(tmp_path / "first")
    result = run(["main.py", "--data", data_root, "--epochs", "1", "--output-dir", first] + TINY)
    assert result.returncode == 0, result.stderr
    written = os.path.join(first, "checkpoint.pth.tar")
    full = full_load(written)
    monkeypatch.setattr(ckpt, "_HAS_WEIGHTS_ONLY", False)
    assert same(ckpt.load_checkpoint(written), full) and full["epoch"] == 1 and "rng" in full
    legacy = str(tmp_path / "legacy.pth.tar")
    save(full, legacy, "legacy")
    assert same(ckpt.load_checkpoint(legacy), full)
    monkeypatch.undo()
    for name, path in [("zipfile", written), ("legacy", legacy)]:
        out = str(tmp_path / name)
        result = run(["main.py", "--data", data_root, "--epochs", "2", "--output-dir", out, "--resume", path] + TINY)
        assert result.returncode == 0, result.stderr
        assert "=> resumed from {} at epoch 1".format(path) in result.stdout + result.stderr
        assert ckpt.load_checkpoint(os.path.join(out, "checkpoint.pth.tar"))["epoch"] == 2


@pytest.mark.smoke
@pytest.mark.parametrize("fmt", ["zipfile", "legacy"])
def test_torchvision_state_dict_loads(tmp_path, loader, fmt):
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=4)
    path = str(tmp_path / "tv.pth")
    save(model.state_dict(), path, fmt)
    state_dict, meta = ckpt.load_model_weights(path)
    assert meta == {} and same(dict(state_dict), dict(model.state_dict()))
    fresh = torchvision.models.shufflenet_v2_x0_5(num_classes=4)
    ckpt.load_into_model(fresh, state_dict, path)
    assert same(dict(fresh.state_dict()), dict(model.state_dict()))


@pytest.mark.parametrize("field, value, expected", [
    ("epoch", "3", "field 'epoch' should be a whole number >= 0, found str '3'"),
    ("epoch", -1, "field 'epoch' should be a whole number >= 0, found int -1"),
    ("epoch", 2.5, "field 'epoch' should be a whole number >= 0, found float 2.5"),
    ("best_acc1", "high", "field 'best_acc1' should be a finite number, found str 'high'"),
    ("best_acc1", float("nan"), "field 'best_acc1' should be a finite number, found float nan"),
    ("args", ["--lr", "0.1"], "field 'args' should be a dict, found list ['--lr', '0.1']"),
    ("classes", "cats", "field 'classes' should be a list of strings, found str 'cats'"),
    ("optimizer", 3, "field 'optimizer' should be a dict, found int 3"),
    ("state_dict", [1, 2], "field 'state_dict' should map parameter names to tensors, found list [1, 2]"),
])
def test_malformed_fields_are_named(tmp_path, field, value, expected):
    data = {"epoch": 1, "best_acc1": 1.0, "args": {}, "state_dict": {"w": torch.ones(1)}}
    data[field] = value
    path = str(tmp_path / "bad.pth.tar")
    ckpt.atomic_save(data, path)
    with pytest.raises(UserError) as info:
        ckpt.load_checkpoint(path, "--resume")
    assert str(info.value) == "{}: {}".format(path, expected)


def test_main_names_a_malformed_field_a_missing_state_dict_and_a_folder(tmp_path, data_root, capsys):
    bad = str(tmp_path / "bad.pth.tar")
    ckpt.atomic_save({"epoch": "3", "state_dict": {"w": torch.ones(1)}}, bad)
    no_weights = str(tmp_path / "no_weights.pth.tar")
    ckpt.atomic_save({"epoch": 3, "best_acc1": 1.0}, no_weights)
    for path, expected in [
            (bad, "error: {}: field 'epoch' should be a whole number >= 0, found str '3'".format(bad)),
            (no_weights, "error: {} is not a checkpoint: field 'state_dict' is missing (it has best_acc1, "
                         "epoch)".format(no_weights)),
            (str(tmp_path), "error: --resume {} is a folder, not a checkpoint file".format(tmp_path))]:
        code = main.main(TINY + ["--data", data_root, "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                                 "--resume", path])
        assert code == 2 and capsys.readouterr().err.strip() == expected


def test_malformed_rng_state_is_a_user_error():
    with pytest.raises(UserError, match=r"^the checkpoint's field 'rng' cannot be restored \(ValueError"):
        seeding.set_rng_state({"python": [3, [1, 2]]})


def test_pretrained_weights_file_runs_nothing(tmp_path, loader):
    """models.build_model(pretrained=FILE) (main.py --pretrained reads the torch hub cache file this way)."""
    import models

    marker = str(tmp_path / "marker")
    path = str(tmp_path / "weights.pth")
    save({"fc.weight": Payload(os.system, ("touch " + marker,))}, path, "zipfile")
    with pytest.raises(ValueError, match="cannot read weights file {}".format(path)) as info:
        models.build_model("shufflenet_v2_x0_5", num_classes=2, pretrained=path)
    assert not os.path.exists(marker) and "\n" not in str(info.value)
    if loader == "restricted unpickler":
        assert "refused to import {}.system".format(os.system.__module__) in str(info.value)


@pytest.mark.parametrize("fmt", ["zipfile", "legacy"])
def test_every_plain_value_round_trips(tmp_path, loader, fmt):
    """Values protocol 2 stores through globals (sets, bytes, complex under Python 2 names) and torch's own values
    load unchanged through both loaders."""
    values = {"set": {1, 2}, "complex": 1 + 2j, "bytes": b"\x00\xff", "tuple": (1, "a"),
              "none": None, "bool": True, "float": 1.5, "int": 2 ** 40, "dtype": torch.float16,
              "size": torch.Size([2, 3]), "tensors": [torch.arange(3), torch.ones(2, dtype=torch.bool),
                                                      torch.zeros(2, dtype=torch.float16), torch.ones(2, 2)[:, 0]]}
    path = str(tmp_path / "plain.pth.tar")
    save({"state_dict": {"w": torch.ones(1)}, "args": values}, path, fmt)
    loaded = ckpt.load_checkpoint(path)["args"]
    assert set(loaded) == set(values)
    for key in values:
        assert same(loaded[key], values[key]) if key != "size" else loaded[key] == values[key], key
