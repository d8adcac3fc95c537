"""training/data/dali.py through DALI's CPU pipeline (the same graph as on a GPU, decoder device "cpu"): crops equal
to the CPU loader's boxes (PSNR), val centre crops, shards per rank, an epoch cut short, exact resume of main.py,
and the one-line error without the package."""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

import main
from training.data import dali, decode, loaders
from training.errors import UserError

needs_dali = pytest.mark.skipif(importlib.util.find_spec("nvidia") is None or
                                importlib.util.find_spec("nvidia.dali") is None,
                                reason="NVIDIA DALI is not installed in this environment ({})".format(
                                    dali.install_command()))
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """2 classes x 4 train, 3 val JPEG photos of 130x87 .. 280x187 (scikit-learn's two sample photos, resized)."""
    root = str(tmp_path_factory.mktemp("dali") / "photos")
    sources = load_sample_images().images
    for split, count in (("train", 4), ("val", 3)):
        for label in range(2):
            folder = os.path.join(root, split, "class_{}".format(label))
            os.makedirs(folder)
            for k in range(count):
                width = 130 + 50 * k
                image = Image.fromarray(sources[(label + k) % 2]).resize((width, width * 2 // 3), decode.BILINEAR)
                image.save(os.path.join(folder, "{}.jpg".format(k)), quality=90)
    return root


def psnr(a, b):
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def batches(loader):
    return [(images.clone(), targets.clone(), bad) for images, targets, bad in loader]


def assert_close_batches(ours, theirs):
    """Same targets and shapes batch by batch; per image >= 35 dB in the median and >= 33 dB for every image (the
    thresholds of the fast decoder's tests in tests/test_augment.py)."""
    assert len(ours) == len(theirs) > 0
    values = []
    for (images, targets, bad), (expected, expected_targets, expected_bad) in zip(ours, theirs):
        assert torch.equal(targets, expected_targets) and bad == expected_bad == 0
        assert images.dtype == torch.uint8 and images.shape == expected.shape
        assert images.is_contiguous(memory_format=torch.channels_last)  # the CPU loader's layout
        values.extend(psnr(image.numpy(), other.numpy()) for image, other in zip(images, expected))
    assert np.median(values) >= 35.0 and min(values) >= 33.0, sorted(values)[:3]


@needs_dali
@pytest.mark.parametrize("world_size", [1, 2])
def test_train_crops_are_the_cpu_loaders_boxes_and_flips_on_every_rank(photos, world_size):
    train_dir = os.path.join(photos, "train")
    flips = set()
    for rank in range(world_size):
        ours, ours_sampler = dali.build_train_loader(train_dir, 2, 1, device=CPU, crop_size=48, seed=5,
                                                     world_size=world_size, rank=rank)
        theirs, their_sampler = loaders.build_train_loader(train_dir, 2, 0, crop_size=48, seed=5,
                                                           world_size=world_size, rank=rank)
        assert len(ours) == len(theirs) == 8 // world_size // 2
        for epoch in (0, 1):
            ours_sampler.set_epoch(epoch)
            their_sampler.set_epoch(epoch)
            assert_close_batches(batches(ours), batches(theirs))
            flips.update(int(ours.dataset[key][0][6]) for key in ours_sampler)
    assert flips == {0, 1}  # both kinds of sample were compared


@needs_dali
def test_val_centre_crops_every_image_once_over_the_ranks(photos):
    val_dir = os.path.join(photos, "val")  # 6 images over 2 ranks, batch 2: 3 images each, a partial last batch
    dataset_order = [target for _, target in loaders.scan_folder(val_dir)[0]]
    seen = []
    for rank in range(2):
        ours = batches(dali.build_val_loader(val_dir, 2, 1, device=CPU, resize_size=64, crop_size=56,
                                             world_size=2, rank=rank))
        theirs = batches(loaders.build_val_loader(val_dir, 2, 0, resize_size=64, crop_size=56, world_size=2,
                                                  rank=rank))
        assert [len(targets) for _, targets, _ in ours] == [2, 1]
        assert_close_batches(ours, theirs)
        targets = torch.cat([targets for _, targets, _ in ours]).tolist()
        assert targets == dataset_order[rank::2]
        seen.extend(targets)
    assert sorted(seen) == sorted(dataset_order)


@needs_dali
def test_an_epoch_cut_short_leaves_nothing_behind(photos):
    """--steps-per-epoch stops reading mid-epoch with batches in flight: the next epoch starts from its own first
    batch, as a fresh loader's."""
    train_dir = os.path.join(photos, "train")
    loader, sampler = dali.build_train_loader(train_dir, 2, 1, device=CPU, crop_size=32, seed=1)
    for _ in loader:
        break
    sampler.set_epoch(1)
    after_break = batches(loader)
    fresh, fresh_sampler = dali.build_train_loader(train_dir, 2, 1, device=CPU, crop_size=32, seed=1)
    fresh_sampler.set_epoch(1)
    expected = batches(fresh)
    assert len(after_break) == len(expected) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after_break, expected))


@needs_dali
def test_unsupported_files_are_replaced_and_named_once(photos, tmp_path, caplog):
    train_dir = str(tmp_path / "train")
    os.makedirs(os.path.join(train_dir, "only"))
    for k in range(3):
        Image.open(os.path.join(photos, "train", "class_0", "{}.jpg".format(k))).save(
            os.path.join(train_dir, "only", "{}.jpg".format(k)))
    Image.new("RGB", (40, 40)).save(os.path.join(train_dir, "only", "anim.gif"))
    loader, _ = dali.build_train_loader(train_dir, 4, 1, device=CPU, crop_size=32, seed=0)
    images, targets, bad = next(iter(loader))
    assert bad == 1 and images.shape == (4, 3, 32, 32)
    assert "anim.gif" in caplog.text and "GIF" in caplog.text
    strict, _ = dali.build_train_loader(train_dir, 4, 1, device=CPU, crop_size=32, seed=0, strict=True)
    with pytest.raises(UserError, match="unreadable image .*anim.gif"):
        list(strict)


@needs_dali
def test_a_file_dali_cannot_decode_is_one_error_naming_it(photos, tmp_path):
    train_dir = str(tmp_path / "train")
    os.makedirs(os.path.join(train_dir, "only"))
    with open(os.path.join(photos, "train", "class_0", "0.jpg"), "rb") as handle:
        good = handle.read()
    for k in range(3):
        with open(os.path.join(train_dir, "only", "{}.jpg".format(k)), "wb") as handle:
            handle.write(good)
    scan_start = good.index(b"\xff\xda")  # header intact, entropy-coded data cut and replaced by bytes
    with open(os.path.join(train_dir, "only", "cut.jpg"), "wb") as handle:
        handle.write(good[:scan_start + 40] + bytes(range(256)) * 8)
    loader, _ = dali.build_train_loader(train_dir, 4, 1, device=CPU, crop_size=32, seed=0)
    with pytest.raises(UserError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith("DALI could not decode {}".format(os.path.join(train_dir, "only", "cut.jpg")))
    assert "--data-backend cpu" in message and "\n" not in message


# main.py, as test_exact_resume.py runs it, with --data-backend dali on the CPU
BASE = ["-a", "shufflenet_v2_x0_5", "-j", "1", "--data-backend", "dali", "--color-jitter", "0.2",
        "--train-crop-size", "32", "--val-resize-size", "36", "--val-crop-size", "32", "--device", "cpu",
        "--lr", "0.05", "--seed", "3", "-b", "4", "--epochs", "3", "--steps-per-epoch", "1", "-p", "100",
        "--eval-freq", "100", "--momentum", "0.9", "--checkpoint-freq", "1"]


@needs_dali
@pytest.mark.usefixtures("one_thread")
def test_main_resumes_exactly_through_dali(photos, tmp_path, monkeypatch):
    started = []
    schedule = dali.DecodePipeline.schedule
    monkeypatch.setattr(dali.DecodePipeline, "schedule", lambda self, plans: started.append(len(plans)) or
                        schedule(self, plans))
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    assert main.main(BASE + ["--data", photos, "--output-dir", full]) == 0
    assert started and set(started) == {4, 2}  # DALI decoded the batches: train 4, val 4 then a partial 2
    assert main.main(BASE + ["--data", photos, "--output-dir", resumed,
                             "--resume", os.path.join(full, "checkpoint_epoch1.pth.tar")]) == 0
    a = torch.load(os.path.join(full, "checkpoint.pth.tar"), map_location="cpu")
    b = torch.load(os.path.join(resumed, "checkpoint.pth.tar"), map_location="cpu")
    assert a["epoch"] == b["epoch"] == 3 and a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, different[:5]


def test_without_dali_one_error_line_names_the_install_command(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # any import of it raises ImportError
    code = main.main(BASE + ["--data", photos, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --data-backend dali needs NVIDIA DALI") and "pip install nvidia-dali-cuda" in err
    assert not os.path.exists(str(tmp_path / "out" / "metrics.jsonl"))
    with pytest.raises(UserError, match="cuda .* or cpu, not npu"):
        dali.check_available("npu")
