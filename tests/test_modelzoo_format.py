from training.logs import modelzoo_format as zlog


def test_step_line_round_trip_and_field_layout():
    head = zlog.prefix("npu", 0)
    line = zlog.format_step(head, 3, 120, 834, [("Time", 0.305, 0.31, "6.3f"), ("Data", 0.001, 0.002, "6.3f"),
                                                 ("Loss", 2.1, 2.3, ".4e"), ("Acc@1", 45.3, 40.1, "6.2f"),
                                                 ("Acc@5", 70.0, 68.0, "6.2f")])
    assert line.startswith("[npu id: 0 ] Epoch: [3][120/834]\tTime")
    assert zlog.parse_line(line) == {"kind": "step", "epoch": 3, "step": 120, "steps": 834,
                                     "loss": 2.1, "loss_avg": 2.3}


def test_fps_and_acc_lines_keep_modelzoo_whitespace_fields():
    head = zlog.prefix("cuda", 1)
    fps = zlog.format_fps(head, 5038.5081, 0.3049)
    assert fps == "[cuda id: 1 ] * FPS@all 5038.508, TIME@all 0.305"
    assert fps.split()[6].rstrip(",") == "5038.508"  # awk '{print $7}' in the original scripts
    acc = zlog.format_acc(head, 65.158, 86.0)
    assert acc.split()[7] == "65.158"  # awk '{print $8}'
    assert zlog.parse_log([fps, "noise", acc]) == [
        {"kind": "fps", "fps": 5038.508, "step_time": 0.305},
        {"kind": "acc", "ema": False, "acc1": 65.158, "acc5": 86.0}]


def test_ema_line_is_not_taken_for_the_model_accuracy_by_grep():
    line = zlog.format_acc(zlog.prefix("cpu", 0), 50.0, 80.0, tag=zlog.EMA_ACC_TAG)
    assert "AVG-ACC" not in line
    assert zlog.parse_line(line)["ema"] is True


def test_validation_line_has_the_step_fields_but_is_never_a_step():
    head = zlog.prefix("cpu", 0)
    fields = [("Time", 0.2, 0.25, "6.3f"), ("Loss", 9.9, 8.8, ".4e"), ("Acc@1", 10.0, 12.5, "6.2f")]
    line = zlog.format_test(head, 3, 10, fields)
    assert line == ("[cpu id: 0 ] Test: [ 3/10]\tTime  0.200 ( 0.250)\tLoss 9.9000e+00 (8.8000e+00)"
                    "\tAcc@1  10.00 ( 12.50)")
    assert "Epoch:" not in line
    assert zlog.parse_line(line) is None and zlog.parse_log([line]) == []
    step = zlog.format_step(head, 1, 3, 10, fields)
    assert step.split("\t")[1:] == line.split("\t")[1:]  # the same field formatting


FIELDS = [("Time", 0.305, 0.31, "6.3f"), ("Data", 0.001, 0.002, "6.3f"), ("Loss", 2.1, 2.3, ".4e"),
          ("Acc@1", 45.3, 40.1, "6.2f"), ("Acc@5", 70.0, 68.0, "6.2f")]


def test_step_line_ends_with_lr_and_eta_after_every_modelzoo_field():
    head = zlog.prefix("npu", 0)
    old = zlog.format_step(head, 3, 120, 834, FIELDS)
    new = zlog.format_step(head, 3, 120, 834, FIELDS, lr=0.00048828125, eta=(65.4, 90061.0))
    assert new == old + "\tLR 4.8828e-04\tETA 0:01:05 (run 25:01:01)"
    assert new.split()[:len(old.split())] == old.split()  # awk '{print $N}' reads the same columns
    assert zlog.parse_line(new) == dict(zlog.parse_line(old), lr=4.8828e-04, eta_epoch=65, eta_run=90061)
    assert zlog.parse_line(old) == {"kind": "step", "epoch": 3, "step": 120, "steps": 834, "loss": 2.1,
                                    "loss_avg": 2.3}  # logs of earlier versions still parse
    assert zlog.clock(0.4) == "0:00:00" and zlog.clock(3599.6) == "1:00:00"


def test_original_shell_pipelines_read_the_new_step_line(tmp_path):
    """The ModelZoo scripts' ActualLoss pipeline on a log with the new fields: the last step's loss."""
    import subprocess
    head = zlog.prefix("npu", 0)
    log = tmp_path / "train_0.log"
    lines = [zlog.format_step(head, 0, 0, 2, FIELDS, lr=0.1, eta=(1.0, 10.0)),
             zlog.format_test(head, 0, 1, FIELDS),
             zlog.format_step(head, 0, 1, 2, FIELDS[:2] + [("Loss", 1.25, 1.5, ".4e")] + FIELDS[3:], lr=0.2,
                              eta=(0.0, 0.0)),
             zlog.format_fps(head, 812.5, 0.25)]
    log.write_text("\n".join(lines) + "\n")
    loss = subprocess.run("grep Epoch: {} | awk -F 'Loss' '{{print $NF}}' | awk '{{print $1}}' | tail -1".format(log),
                          shell=True, capture_output=True, text=True, check=True).stdout.strip()
    assert float(loss) == 1.25
    fps = subprocess.run("grep 'FPS@all' {} | awk '{{print $7}}'".format(log), shell=True, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert fps == "812.500,"
    assert [r["loss"] for r in zlog.parse_log(lines) if r["kind"] == "step"] == [2.1, 1.25]
