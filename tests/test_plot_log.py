"""tools/plot_log.py on a realistic metrics.jsonl: per-step losses, one loss spike, plain and EMA evaluations; the
same run as metrics.jsonl and as a ModelZoo text log reads alike; what a resume trains again is drawn once.

The figure's Axes are inspected (scale, limits, line data, colours), not only the PNG's existence.
"""
import json
import math
import os
import random
import sys

import pytest
from PIL import Image

from tools import plot_log
from training.logs import modelzoo_format


EPOCHS, STEPS, PRINT_FREQ = 3, 50, 10
SPIKE = 1.0e6


def train_loss(index):
    """A decaying noisy loss per global step, with one spike in the second epoch."""
    if index == STEPS + 17:
        return SPIKE
    return 6.9 * math.exp(-index / 60.0) + 1.5 + random.Random(index).uniform(-0.2, 0.2)


def run_records(with_losses=True):
    """metrics.jsonl records of a 3-epoch run: step records at the print points (with `losses` for every step since
    the previous one), an epoch record and a plain + EMA evaluation per epoch."""
    records = []
    for epoch in range(EPOCHS):
        pending = []
        for step in range(STEPS):
            index = epoch * STEPS + step
            pending.append(train_loss(index))
            if step % PRINT_FREQ == 0 or step == STEPS - 1:
                record = {"kind": "step", "epoch": epoch, "step": step, "steps": STEPS, "loss": pending[-1],
                          "lr": 0.5 * (1 - index / float(EPOCHS * STEPS)), "acc1": 1.0 + index / 10.0,
                          "acc5": 5.0 + index / 5.0, "batch_time": 0.1, "data_time": 0.01}
                if with_losses:
                    record["losses"] = pending
                records.append(record)
                pending = []
        epoch_losses = [train_loss(epoch * STEPS + step) for step in range(STEPS)]
        records.append({"kind": "epoch", "epoch": epoch, "fps": 900.0 + 10 * epoch, "step_time": 0.1,
                        "loss": sum(epoch_losses) / STEPS, "lr": 0.5 * (1 - (epoch + 1) / float(EPOCHS)),
                        "bad_images": 0, "seconds": 5.0})
        for ema in (False, True):
            acc1 = 20.0 * (epoch + 1) - (3.0 if ema else 0.0)
            records.append({"kind": "eval", "epoch": epoch, "acc1": acc1, "acc5": acc1 + 25.0,
                            "loss": 4.0 - epoch - (0.2 if ema else 0.0), "ema": ema})
    return records


def write_jsonl(path, records):
    with open(path, "w") as stream:
        stream.write("".join(json.dumps(record) + "\n" for record in records))
    return path


def figure_of(path):
    return plot_log.draw(plot_log.read_log(path), "test")


def line(axis, label):
    matches = [each for each in axis.lines if each.get_label() == label]
    assert len(matches) == 1, [each.get_label() for each in axis.lines]
    return matches[0]


def test_every_step_loss_is_plotted_at_its_own_step(tmp_path):
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), run_records())
    loss_axis = figure_of(path).axes[0]
    steps = line(loss_axis, "train loss (every step)")
    assert len(steps.get_xdata()) == EPOCHS * STEPS
    assert list(steps.get_xdata()) == pytest.approx([index / float(STEPS) for index in range(EPOCHS * STEPS)])
    assert list(steps.get_ydata()) == pytest.approx([train_loss(index) for index in range(EPOCHS * STEPS)])


def test_without_losses_the_logged_steps_are_plotted(tmp_path):
    records = run_records(with_losses=False)
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), records)
    steps = line(figure_of(path).axes[0], "train loss (logged steps)")
    logged = [record for record in records if record["kind"] == "step"]
    assert len(steps.get_xdata()) == len(logged) == EPOCHS * 6
    assert list(steps.get_ydata()) == pytest.approx([record["loss"] for record in logged])


def test_a_spike_does_not_set_the_loss_axis(tmp_path):
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), run_records())
    loss_axis = figure_of(path).axes[0]
    assert loss_axis.get_yscale() == "log"
    bottom, top = loss_axis.get_ylim()
    ordinary = [train_loss(index) for index in range(EPOCHS * STEPS) if train_loss(index) != SPIKE]
    assert top < SPIKE / 1000.0
    assert bottom < min(ordinary) and top > max(ordinary)  # every other loss stays inside
    # the spike's step and the mean loss of its epoch (about SPIKE / STEPS) are marked on the top edge
    marker = line(loss_axis, "above the axis")
    assert list(marker.get_xdata()) == pytest.approx([(STEPS + 17) / float(STEPS), 2.0])
    assert list(marker.get_ydata()) == [top, top]
    assert "2 value(s) above the axis, highest 1e+06 at epoch 1.34" in loss_axis.get_title()
    # a short log axis is labelled with plain numbers, more than one of them
    loss_axis.figure.canvas.draw()
    labels = [tick.get_text() for tick in loss_axis.get_yticklabels()
              if bottom <= tick.get_position()[1] <= top and tick.get_text()]
    assert labels == ["2", "3", "5", "10"]


def test_a_diverging_run_stays_visible(tmp_path):
    """When the loss grows for half the run it is the bulk of the values: nothing is cut off."""
    records = run_records(with_losses=False)
    for record in records:
        if record["kind"] == "step" and record["epoch"] >= 1:
            record["loss"] = 80.0 * (1 + record["step"])
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), records)
    loss_axis = figure_of(path).axes[0]
    assert loss_axis.get_ylim()[1] > 80.0 * STEPS
    assert not [each for each in loss_axis.lines if each.get_label() == "above the axis"]


def test_a_non_positive_loss_gives_a_linear_axis(tmp_path):
    records = run_records(with_losses=False)
    records[0]["loss"] = 0.0
    loss_axis = figure_of(write_jsonl(str(tmp_path / "metrics.jsonl"), records)).axes[0]
    assert loss_axis.get_yscale() == "linear" and loss_axis.get_ylim()[0] < 0.0 < loss_axis.get_ylim()[1]


def test_ema_curves_have_their_own_colours(tmp_path):
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), run_records())
    loss_axis, _, acc_axis, _ = figure_of(path).axes
    pairs = [(loss_axis, "val loss"), (acc_axis, "Acc@1"), (acc_axis, "Acc@5")]
    plain_colours = {line(axis, name).get_color() for axis, name in pairs}
    ema_colours = {line(axis, name + " EMA").get_color() for axis, name in pairs}
    assert len(plain_colours) == len(ema_colours) == 3 and not plain_colours & ema_colours
    for axis, name in pairs:
        assert line(axis, name + " EMA").get_linestyle() == "--" and line(axis, name).get_linestyle() == "-"
    assert list(line(acc_axis, "Acc@1 EMA").get_ydata()) == [17.0, 37.0, 57.0]


def test_the_command_writes_the_png(tmp_path):
    path = write_jsonl(str(tmp_path / "metrics.jsonl"), run_records())
    output = str(tmp_path / "curves.png")
    assert plot_log.main([path, "-o", output]) == 0
    from PIL import Image

    with Image.open(output) as image:
        assert image.format == "PNG" and image.size == (1200, 800)


if __name__ == "__main__":  # python tests/test_plot_log.py OUT.jsonl: the sample log for looking at the figure
    write_jsonl(sys.argv[1], run_records())


def write_logs(folder):
    """The same 3-epoch run as metrics.jsonl and as a ModelZoo text log (eval after epochs 1 and 2, with EMA)."""
    head = modelzoo_format.prefix("npu", 0)
    jsonl, text = [], []
    for epoch in range(3):
        for step in (0, 5, 9):
            loss, lr = 5.0 - epoch - step / 10.0, 0.5 * (1 - (epoch * 10 + step) / 30.0)
            jsonl.append({"kind": "step", "epoch": epoch, "step": step, "steps": 10, "loss": loss, "lr": lr,
                          "acc1": 1.0, "acc5": 5.0, "batch_time": 0.1, "data_time": 0.01})
            text.append(modelzoo_format.format_step(head, epoch, step, 10, [("Loss", loss, loss + 0.5, ".4e")]))
        jsonl.append({"kind": "epoch", "epoch": epoch, "fps": 1000.0 + epoch, "step_time": 0.2,
                      "loss": 4.5 - epoch, "lr": lr, "bad_images": 0, "seconds": 3.0})
        text.append(modelzoo_format.format_fps(head, 1000.0 + epoch, 0.2))
        if epoch >= 1:
            for ema, tag in ((False, modelzoo_format.ACC_TAG), (True, modelzoo_format.EMA_ACC_TAG)):
                acc1 = 30.0 * epoch + (0 if ema else 1)
                jsonl.append({"kind": "eval", "epoch": epoch, "acc1": acc1, "acc5": acc1 + 20, "loss": 2.0,
                              "ema": ema})
                text.append(modelzoo_format.format_acc(head, acc1, acc1 + 20, tag=tag))
    json_path, text_path = os.path.join(folder, "metrics.jsonl"), os.path.join(folder, "train_0.log")
    with open(json_path, "w") as stream:
        stream.write("".join(json.dumps(r) + "\n" for r in jsonl) + '{"kind": "step", "epo')  # crash mid-line
    with open(text_path, "w") as stream:
        stream.write("some launcher output\n" + "".join(line + "\n" for line in text))
    return json_path, text_path


@pytest.mark.smoke
def test_plot_log_reads_both_formats_alike(tmp_path):
    json_path, text_path = write_logs(str(tmp_path))
    from_json, from_text = plot_log.read_log(json_path), plot_log.read_log(text_path)
    assert from_json.skipped == 1 and from_text.skipped == 0
    for curves in (from_json, from_text):
        assert [round(s[0], 3) for s in curves.steps[:3]] == [0.0, 0.5, 0.9]
        assert sorted(curves.epochs) == [0, 1, 2]
        assert [curves.epochs[e]["fps"] for e in range(3)] == [1000.0, 1001.0, 1002.0]
        assert [(e, a1, a5, ema) for e, a1, a5, _, ema in curves.evals] == [
            (1, 31.0, 51.0, False), (1, 30.0, 50.0, True), (2, 61.0, 81.0, False), (2, 60.0, 80.0, True)]
    assert [s[2] for s in from_json.steps[:2]] == [0.5, pytest.approx(0.5 * (1 - 5 / 30.0))]
    assert all(s[2] is None for s in from_text.steps)  # ModelZoo step lines carry no learning rate
    assert from_json.epochs[2]["loss"] == 2.5 and from_text.epochs[2]["loss"] == pytest.approx(2.6)


def test_plot_log_writes_one_png_and_rejects_bad_input(tmp_path):
    json_path, text_path = write_logs(str(tmp_path))
    for source in (json_path, text_path):
        output = str(tmp_path / (os.path.basename(source) + ".png"))
        assert plot_log.main([source, "-o", output]) == 0
        with Image.open(output) as image:
            assert image.format == "PNG" and image.size == (1200, 800)
    empty = tmp_path / "empty.log"
    empty.write_text("nothing to see\n")
    with pytest.raises(plot_log.UserError, match="no training records"):
        plot_log.main([str(empty), "-o", str(tmp_path / "x.png")])
    with pytest.raises(plot_log.UserError, match="log file not found"):
        plot_log.main([str(tmp_path / "missing.jsonl")])
    with pytest.raises(plot_log.UserError, match="cannot write .xyz"):
        plot_log.main([json_path, "-o", str(tmp_path / "x.xyz")])
    assert not math.isnan(plot_log.read_log(json_path).epochs[0]["loss"])


def test_plot_log_drops_what_a_resume_trains_again(tmp_path):
    def epoch(e, fps):
        return [{"kind": "step", "epoch": e, "step": s, "steps": 2, "loss": fps + s, "lr": 0.1} for s in (0, 1)] + [
            {"kind": "epoch", "epoch": e, "fps": fps, "loss": 1.0, "lr": 0.1},
            {"kind": "eval", "epoch": e, "acc1": fps / 10.0, "acc5": 50.0, "loss": 1.0, "ema": False}]
    lines = epoch(0, 100.0) + epoch(1, 110.0) + epoch(2, 120.0)[:1]  # killed in epoch 2, resumed from epoch 1
    lines += [{"kind": "resume", "epoch": 1}] + epoch(1, 210.0) + epoch(2, 220.0)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    curves = plot_log.read_log(str(path))
    assert {e: figures["fps"] for e, figures in curves.epochs.items()} == {0: 100.0, 1: 210.0, 2: 220.0}
    assert [(e[0], e[1]) for e in curves.evals] == [(0, 10.0), (1, 21.0), (2, 22.0)]
    assert [(x, loss) for x, loss, _ in curves.steps] == [(0.0, 100.0), (0.5, 101.0), (1.0, 210.0), (1.5, 211.0),
                                                         (2.0, 220.0), (2.5, 221.0)]
