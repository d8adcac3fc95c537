"""training/loaders.py: folders and their errors, loaders, seeds, sharding, bad images, device preprocessing."""
import logging
import os
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from tests import torchvision_reference
from tests.datasets import make_image_folder
from training.data import decode
from training.data import device_preprocess
from training.data import loaders
from training.errors import UserError, run_cli


pytestmark = pytest.mark.usefixtures("decode_path")  # every test: fast decoder and Pillow (conftest.py)


@pytest.fixture()
def root(tmp_path):
    """3 classes x 8 train, 3 val images of 48x40."""
    return make_image_folder(str(tmp_path / "data"), classes=3, train_per_class=8, val_per_class=3)


def _batches(loader):
    return [(images.clone(), targets.clone(), bad) for images, targets, bad in loader]


# ----------------------------------------------------------------------------------------------------------
# Folders


def test_check_data_root_accepts_an_imagenet_layout(root):
    train_dir, val_dir = loaders.check_data_root(root)
    assert (train_dir, val_dir) == (os.path.join(root, "train"), os.path.join(root, "val"))
    assert loaders.num_classes(train_dir) == 3


@pytest.mark.parametrize("breakage,needle", [
    ("no_root", "data folder not found"),
    ("no_train", "no train/ folder"),
    ("no_val", "no val/ folder"),
    ("no_classes", "no class folders"),
    ("empty_class", "empty class folder"),
    ("only_text", "empty class folder"),
    ("val_class_missing", "val/ classes differ"),
])
def test_check_data_root_names_what_is_missing(root, breakage, needle):
    if breakage == "no_root":
        root = os.path.join(root, "nowhere")
    elif breakage == "no_train":
        shutil.rmtree(os.path.join(root, "train"))
    elif breakage == "no_val":
        shutil.rmtree(os.path.join(root, "val"))
    elif breakage == "no_classes":
        for name in os.listdir(os.path.join(root, "train")):
            shutil.rmtree(os.path.join(root, "train", name))
    elif breakage == "empty_class":
        os.makedirs(os.path.join(root, "train", "class_3"))
        os.makedirs(os.path.join(root, "val", "class_3"))
    elif breakage == "only_text":
        for split in ("train", "val"):
            os.makedirs(os.path.join(root, split, "class_3"))
            with open(os.path.join(root, split, "class_3", "notes.txt"), "w") as handle:
                handle.write("not an image")
    elif breakage == "val_class_missing":
        shutil.rmtree(os.path.join(root, "val", "class_1"))
    with pytest.raises(UserError) as info:
        loaders.check_data_root(root)
    message = str(info.value)
    assert needle in message and "\n" not in message
    if breakage in ("empty_class", "only_text"):
        assert "class_3" in message


def test_scan_is_sorted_recursive_and_skips_other_files(root, caplog):
    train = os.path.join(root, "train")
    os.makedirs(os.path.join(train, "class_0", "nested"))
    shutil.copy(os.path.join(train, "class_0", "train_0.jpg"), os.path.join(train, "class_0", "nested", "a.JPEG"))
    for name in ("readme.txt", ".hidden.jpg"):
        with open(os.path.join(train, "class_1", name), "w") as handle:
            handle.write("x")
    with caplog.at_level(logging.WARNING, logger="training.data.loaders"):
        samples, classes = loaders.scan_folder(train)
    assert classes == ["class_0", "class_1", "class_2"]
    assert len(samples) == 25 and [t for _, t in samples] == sorted(t for _, t in samples)
    assert os.path.join(train, "class_0", "nested", "a.JPEG") in [p for p, _ in samples]
    assert not any(p.endswith((".txt", ".hidden.jpg")) for p, _ in samples)
    assert "skipped 1 files" in caplog.text


def test_empty_train_folder_fails_at_start(tmp_path):
    os.makedirs(str(tmp_path / "train"))
    with pytest.raises(UserError, match="no class folders"):
        loaders.build_train_loader(str(tmp_path / "train"), 2, 0)
    with pytest.raises(UserError, match="smaller than the crop size"):
        loaders.build_val_loader(str(tmp_path / "train"), 2, 0, resize_size=200, crop_size=224)
    with pytest.raises(UserError, match="fewer than one batch"):
        loaders.build_train_loader(make_image_folder(str(tmp_path / "d"), 2, 2, 1) + "/train", 8, 0)


# ----------------------------------------------------------------------------------------------------------
# Loaders


def test_train_batches_are_uint8_and_reproducible_with_any_worker_count(root):
    train_dir = os.path.join(root, "train")
    loader, sampler = loaders.build_train_loader(train_dir, 5, 0, crop_size=32, seed=7)
    assert len(loader) == 24 // 5  # drop_last
    sampler.set_epoch(3)
    first = _batches(loader)
    assert len(first) == 4
    for images, targets, bad in first:
        assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32)
        assert images.is_contiguous(memory_format=torch.channels_last)  # HWC samples copied as they are
        assert targets.dtype == torch.int64 and bad == 0
    again = _batches(loader)  # same epoch again: identical
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    sampler.set_epoch(4)
    other = _batches(loader)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    workers, worker_sampler = loaders.build_train_loader(train_dir, 5, 2, crop_size=32, seed=7)
    worker_sampler.set_epoch(3)
    in_workers = _batches(workers)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, in_workers))


def test_train_shards_cover_the_data_set_once_per_epoch(root):
    train_dir = os.path.join(root, "train")
    seen = []
    for rank in range(3):
        loader, sampler = loaders.build_train_loader(train_dir, 2, 0, crop_size=16, world_size=3, rank=rank, seed=1)
        sampler.set_epoch(0)
        keys = list(sampler)
        assert len(keys) == len(sampler) == 8
        seen.extend(index for index, _ in keys)
    assert sorted(seen) == list(range(24))


def test_val_shards_see_every_image_exactly_once(root):
    val_dir = os.path.join(root, "val")  # 9 images over 2 ranks: 5 + 4, no padding
    dataset_order = [t for _, t in loaders.scan_folder(val_dir)[0]]
    targets = []
    for rank in range(2):
        loader = loaders.build_val_loader(val_dir, 2, 0, resize_size=36, crop_size=32, world_size=2, rank=rank)
        got = torch.cat([t for _, t, _ in loader]).tolist()
        assert got == dataset_order[rank::2]
        targets.extend(got)
    assert sorted(targets) == sorted(dataset_order)


def test_val_batches_equal_load_val_image(root):
    val_dir = os.path.join(root, "val")
    loader = loaders.build_val_loader(val_dir, 4, 0, resize_size=36, crop_size=32)
    images = torch.cat([i for i, _, _ in loader])
    paths = [p for p, _ in loaders.scan_folder(val_dir)[0]]
    assert images.shape == (9, 3, 32, 32)
    for k in (0, 8):
        assert torch.equal(images[k], loaders.load_val_image(paths[k], 36, 32))


def test_load_val_image_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="image not found: .*missing.jpg"):
        loaders.load_val_image(str(tmp_path / "missing.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match="unreadable image .*broken.jpg"):
        loaders.load_val_image(str(broken))


# ----------------------------------------------------------------------------------------------------------
# Bad images


def _break_files(root):
    """A corrupt, a truncated and a text-in-.jpg file in train/; returns their paths."""
    folder = os.path.join(root, "train", "class_1")
    good = open(os.path.join(folder, "train_0.jpg"), "rb").read()
    paths = [os.path.join(folder, name) for name in ("corrupt.jpg", "truncated.jpg", "text.jpg")]
    with open(paths[0], "wb") as handle:
        handle.write(good[:200] + bytes(range(256)) * 4)
    with open(paths[1], "wb") as handle:
        handle.write(good[:len(good) // 2])
    with open(paths[2], "w") as handle:
        handle.write("this is not an image\n")
    return paths


def test_bad_images_are_replaced_counted_and_warned_once(root, caplog):
    bad_paths = _break_files(root)
    loader, sampler = loaders.build_train_loader(os.path.join(root, "train"), 3, 0, crop_size=16, seed=0)
    with caplog.at_level(logging.WARNING, logger="training.data.loaders"):
        counts = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            for images, targets, bad in loader:
                assert images.shape == (3, 3, 16, 16) and targets.shape == (3,)
                counts.append(bad)
    # 27 files, 9 batches of 3 per epoch (drop_last keeps all 27): each bad file read once per epoch at least.
    assert sum(counts) >= 2 * len(bad_paths)
    for path in bad_paths:
        assert caplog.text.count(path) == 1  # once over both epochs


def test_strict_data_raises_user_error_naming_the_file(root):
    bad_paths = _break_files(root)
    for workers in (0, 1):
        loader, _ = loaders.build_train_loader(os.path.join(root, "train"), 3, workers, crop_size=16, strict=True)
        message = None
        try:  # not pytest.raises: a kept traceback would hold the worker iterator and slow its shutdown
            for _ in loader:
                pass
        except UserError as exc:
            message = str(exc)
        assert message is not None
        assert message.startswith("unreadable image ") and "\n" not in message
        assert any(path in message for path in bad_paths)
    assert all(os.path.exists(path) for path in bad_paths)  # nothing is deleted or rewritten


# ----------------------------------------------------------------------------------------------------------
# Device side


def _reference(images_uint8, factors=None, order=None):
    out = []
    functions = torchvision_reference.tensor_colour_ops()  # brightness, contrast, saturation: ops 0, 1, 2
    for k, image in enumerate(images_uint8.float() / 255.0):
        if factors is not None:
            for op in order[k].tolist():
                image = functions[op](image, factors[k, op].item())
        out.append(TF.normalize(image, decode.MEAN, decode.STD))
    return torch.stack(out)


def test_device_preprocess_normalizes_and_jitters_like_torchvision():
    images = torch.randint(0, 256, (6, 3, 10, 12), dtype=torch.uint8)
    original = images.clone()
    plain = device_preprocess.DevicePreprocess(jitter=0.4)(images, train=False)
    assert plain.dtype == torch.float32 and torch.allclose(plain, _reference(images), atol=1e-5)
    generator = torch.Generator()
    generator.manual_seed(5)
    jittered = device_preprocess.DevicePreprocess(jitter=0.4, generator=generator)(images, train=True)
    generator.manual_seed(5)
    factors, order = device_preprocess.sample_jitter(6, 0.4, generator)
    assert torch.allclose(jittered, _reference(images, factors, order), atol=1e-4)
    assert torch.equal(images, original)  # the input is never modified
    assert torch.allclose(device_preprocess.DevicePreprocess(jitter=0.0)(images, train=True), plain)
    last = device_preprocess.DevicePreprocess(channels_last=True)(images, train=False)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.allclose(last, plain)
    with pytest.raises(UserError):
        device_preprocess.DevicePreprocess(jitter=-1)


def test_synthetic_loader_yields_uint8_batches_on_the_device():
    loader = loaders.SyntheticLoader(4, 16, 10, torch.device("cpu"), steps=3)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    for images, targets, bad in batches:
        assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16)
        assert targets.dtype == torch.int64 and int(targets.max()) < 10 and bad == 0
    assert np.unique(batches[0][0].numpy()).size > 200  # random pixels, not a constant


# ----------------------------------------------------------------------------------------------------------
# tools/bench_loader.py


def test_bench_loader_makes_imagenet_like_data_and_prints_json(tmp_path, capsys, decode_path):
    import json
    import sys

    from PIL import Image

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench_loader

    root = str(tmp_path / "bench")
    assert bench_loader.main(["--make-data", root, "--count", "24"]) == 0
    samples, classes = loaders.scan_folder(os.path.join(root, "train"))
    assert len(samples) == 24 and len(classes) == 10
    with Image.open(samples[0][0]) as image:
        assert image.format == "JPEG" and max(image.size) >= 400
    capsys.readouterr()
    assert bench_loader.main(["--data", root, "--workers", "0", "--batches", "1", "--batch-size", "4",
                              "--rounds", "1", "--max-workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["workers"] == 0 and result["ours_img_s"] > 0 and result["torchvision_img_s"] > 0
    assert result["fast_decode"] == (decode_path == "fast")
    assert result["ratio"] == pytest.approx(result["ours_img_s"] / result["torchvision_img_s"], rel=0.05)
    ours_ms = result["ours_loader_cpu_ms_per_img"]
    assert result["ratio_per_cpu_second"] == pytest.approx(result["torchvision_cpu_ms_per_img"] / ours_ms, rel=0.05)
    stages = ["read", "header", "decode", "resize"] if decode_path == "fast" else ["read", "decode", "resize"]
    assert list(result["stages_cpu_ms"]) == stages + ["collate", "device"]
    assert all(value >= 0 for value in result["stages_cpu_ms"].values()) and result["stages_cpu_ms"]["decode"] > 0
    assert list(result["workers_img_s"]) == ["1"] and result["workers_img_s"]["1"] > 0
    assert run_cli(bench_loader.main, ["--workers", "0"]) == 2  # no --data: one-line error, non-zero exit
    assert run_cli(bench_loader.main, ["--data", root, "--rounds", "0"]) == 2  # was a StatisticsError traceback


def test_train_crop_scale_reaches_the_crop_boxes_and_is_validated(root, monkeypatch):
    areas = []
    real_box = decode.random_crop_box

    def recording_box(width, height, rng, scale=decode.SCALE, ratio=decode.RATIO):
        box = real_box(width, height, rng, scale=scale, ratio=ratio)
        areas.append(box[2] * box[3] / float(width * height))
        return box

    monkeypatch.setattr(decode, "random_crop_box", recording_box)
    loader, _ = loaders.build_train_loader(os.path.join(root, "train"), batch_size=8, workers=0, crop_size=16,
                                        scale=(0.7, 0.9))
    _batches(loader)
    assert len(areas) == 24
    # rounding the box to whole pixels moves the area fraction by a few percent on a 48x40 image
    assert all(0.62 <= a <= 0.98 for a in areas), areas
    with pytest.raises(UserError, match="crop scale"):
        loaders.build_train_loader(os.path.join(root, "train"), batch_size=8, workers=0, scale=(0.9, 0.5))


def test_jitter_factors_reach_the_device_unchanged():
    factors, order = device_preprocess.sample_jitter(5, 0.4, torch.Generator().manual_seed(3))
    on_device_factors, on_device_order = device_preprocess.upload_jitter(factors, order, torch.device("cpu"))
    assert torch.equal(on_device_factors, factors)
    assert torch.equal(on_device_order, order) and on_device_order.dtype == torch.int64


# ----------------------------------------------------------------------------------------------------------
# Folder traps and missing fast-decode packages


def test_symlink_loops_and_links_to_parents_add_no_images(root, caplog):
    """A link to `..`, a link to the class itself and a link to another class: every image is listed once."""
    train = os.path.join(root, "train")
    before, _ = loaders.scan_folder(train)
    os.symlink("..", os.path.join(train, "class_0", "up"))
    os.symlink(".", os.path.join(train, "class_1", "self"))
    os.symlink(os.path.join(train, "class_0"), os.path.join(train, "class_2", "other_class"))
    os.makedirs(os.path.join(train, "class_2", "deep"))
    os.symlink(os.path.join("..", ".."), os.path.join(train, "class_2", "deep", "loop"))
    after, _ = loaders.scan_folder(train)
    assert after == before
    loaders.check_data_root(root)  # finishes: no endless walk


def test_fifo_and_other_special_files_are_skipped_and_counted(root, caplog):
    train = os.path.join(root, "train")
    os.mkfifo(os.path.join(train, "class_0", "pipe.jpg"))  # opening it to read would block for good
    os.mkfifo(os.path.join(train, "class_1", "pipe.png"))
    with caplog.at_level(logging.WARNING, logger="training.data.loaders"):
        samples, _ = loaders.scan_folder(train)
    assert len(samples) == 24 and not any("pipe" in path for path, _ in samples)
    assert "skipped 2 entries" in caplog.text and "not regular files" in caplog.text
    loader, sampler = loaders.build_train_loader(train, 4, 2, crop_size=16, seed=0)
    assert sum(images.shape[0] for images, _, _ in loader) == 24  # a full epoch, nothing hangs


_BLOCKED = """
import sys
sys.modules["simplejpeg"] = None  # import raises ImportError, as when the package is not installed
sys.modules["cv2"] = None
from training.data import loaders
loader, sampler = loaders.build_train_loader(sys.argv[1] + "/train", 4, 2, crop_size=24, seed=1)
val = loaders.build_val_loader(sys.argv[1] + "/val", 4, 2, resize_size=28, crop_size=24)
for batches in (loader, val):
    for images, targets, bad in batches:
        print(tuple(images.shape), images.dtype, bad)
"""


def test_missing_fast_packages_fall_back_with_one_warning_line(root, decode_path, monkeypatch):
    """simplejpeg and cv2 blocked in a subprocess (2 workers): one warning line, batches of the same shapes and
    dtype as with the packages present."""
    import subprocess
    import sys

    monkeypatch.delenv(decode.FAST_DECODE_ENV, raising=False)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _BLOCKED, root], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: fast JPEG decoding off"), warnings
    assert "pip install simplejpeg opencv-python-headless" in warnings[0]
    expected = []
    loader, _ = loaders.build_train_loader(os.path.join(root, "train"), 4, 0, crop_size=24, seed=1)
    val = loaders.build_val_loader(os.path.join(root, "val"), 4, 0, resize_size=28, crop_size=24)
    for batches in (loader, val):
        expected += ["{} {} {}".format(tuple(images.shape), images.dtype, bad) for images, _, bad in batches]
    assert result.stdout.splitlines() == expected


class _OpenCVThreads(torch.utils.data.Dataset):
    """Reports the OpenCV thread count of the process that reads each item."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return decode.fast_modules()[1].getNumThreads()


def test_opencv_uses_one_thread_per_process(root, decode_path):
    if decode_path != "fast":
        pytest.skip("OpenCV threads matter on the fast path only (this is the Pillow run of the same test)")
    cv2 = decode.fast_modules()[1]
    cv2.setNumThreads(4)
    loaders.build_train_loader(os.path.join(root, "train"), 4, 0, crop_size=16)  # workers=0: decoding here
    assert cv2.getNumThreads() == 1
    cv2.setNumThreads(4)  # as a parent with more threads would fork its workers
    loader = torch.utils.data.DataLoader(_OpenCVThreads(), batch_size=1, num_workers=2,
                                         worker_init_fn=decode.init_worker)
    assert [int(batch) for batch in loader] == [1, 1, 1, 1]
    cv2.setNumThreads(1)
