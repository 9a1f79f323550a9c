"""The progress bar: fits the terminal, redraws in place, one summary line per epoch."""

import io
import os
import shutil
from types import SimpleNamespace

import pytest

from glassnet.train.progress import ProgressBar, epoch_summary


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def record(epoch, **values):
    return {
        "epoch": epoch + 1,
        "train_loss": 0.5,
        "train_accuracy": 0.75,
        "val_loss": 0.25,
        "val_accuracy": 0.875,
        "lr": 0.001,
        "epoch_seconds": 2.0,
    } | values


def batch_logs(batch, size=32, accuracy=0.8125):
    return {
        "loss": 0.4,
        "size": size,
        "loss_mean": 0.4123,
        "accuracy_mean": accuracy,
        "seen": (batch + 1) * size,
    }


@pytest.fixture
def columns(monkeypatch):
    """Set the terminal width shutil reports (the bar asks it at every draw)."""

    def set_width(width):
        size = os.terminal_size((width, 24))
        monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: size)

    set_width(40)
    return set_width


def make_bar(stream, num_batches=5, epochs=2, main=True, **options):
    clock = Clock()
    summaries = io.StringIO()
    bar = ProgressBar(stream, summary_stream=summaries, clock=clock, **options)
    bar.set_trainer(SimpleNamespace(epochs=epochs, num_batches=num_batches, is_main_process=main))
    bar.on_train_begin({})
    return bar, clock, summaries


def run_epoch(bar, clock, epoch=0, batches=range(5), seconds=0.2, **logs):
    bar.on_epoch_begin(epoch, {})
    for batch in batches:
        clock.now += seconds
        bar.on_train_batch_end(batch, batch_logs(batch, **logs))


def test_live_line_fits_the_terminal_and_is_cleared(columns):
    terminal = Terminal()
    bar, clock, summaries = make_bar(terminal)
    run_epoch(bar, clock)
    drawn = terminal.getvalue()
    assert "\n" not in drawn and drawn.count("\r") == 5
    segments = drawn.split("\r")[1:]
    assert all(len(segment) <= 39 for segment in segments)
    assert segments[-1].startswith("Epoch 1/2 5/5 loss 0.4123 ")  # no room for a bar
    assert "ETA 0:00" in segments[-1] and "img/s" not in segments[-1]  # dropped first
    assert summaries.getvalue() == ""
    bar.on_epoch_end(0, record(0))
    assert terminal.getvalue() == drawn + "\r" + " " * 39 + "\r"
    assert summaries.getvalue().splitlines() == [epoch_summary(record(0), 2)]


@pytest.mark.parametrize("width", [20, 60, 200])
def test_every_width_gets_a_line_that_does_not_wrap(columns, width):
    columns(width)
    terminal = Terminal()
    bar, clock, _ = make_bar(terminal, num_batches=10**6)
    run_epoch(bar, clock, batches=[0, 499_999], seconds=3600.0)
    segments = terminal.getvalue().split("\r")[1:]
    assert len(segments) == 2 and all(len(segment) == width - 1 for segment in segments)
    if width == 200:
        assert "[" in segments[-1] and "500000/1000000" in segments[-1]


def test_a_shorter_line_erases_the_longer_one_before_it(columns):
    terminal = Terminal()
    bar, clock, _ = make_bar(terminal)
    bar.on_epoch_begin(0, {})
    clock.now += 1
    bar.on_train_batch_end(0, batch_logs(0))
    clock.now += 1
    bar.on_train_batch_end(1, batch_logs(1, accuracy=None))  # no "acc": a shorter text
    first, second = terminal.getvalue().split("\r")[1:]
    assert len(second) == len(first) == 39 and "acc" not in second


def test_redraws_at_most_ten_times_a_second(columns):
    terminal = Terminal()
    bar, clock, _ = make_bar(terminal, num_batches=100)
    run_epoch(bar, clock, batches=range(100), seconds=0.01)  # one second in all
    assert 9 <= terminal.getvalue().count("\r") <= 12  # ~10, and the last batch is drawn
    assert "100/100" in terminal.getvalue().split("\r")[-1]


def test_images_per_second_count_only_this_process(columns):
    columns(200)
    terminal = Terminal()
    bar, clock, _ = make_bar(terminal, num_batches=10)
    # resumed at batch 6 of 10: logs["seen"] includes the 200 images of the first session
    bar.on_epoch_begin(0, {})
    for batch in (6, 7):
        clock.now += 2.0
        bar.on_train_batch_end(batch, batch_logs(batch, size=50) | {"seen": 250 + batch})
    line = terminal.getvalue().split("\r")[-1]
    assert "8/10" in line and " 25 img/s" in line  # 100 images in 4 s
    assert "ETA 0:04" in line  # 2 s a batch, 2 batches left


def test_without_a_terminal_only_one_summary_per_epoch(columns):
    log = io.StringIO()
    bar = ProgressBar(log, summary_stream=log, clock=Clock())
    assert not bar.live
    bar.set_trainer(SimpleNamespace(epochs=2, num_batches=5, is_main_process=True))
    bar.on_train_begin({})
    for epoch in range(2):
        run_epoch(bar, Clock(), epoch=epoch)
        bar.on_epoch_end(epoch, record(epoch, val_loss=None, val_accuracy=None))
    bar.on_train_end({"status": "completed", "reason": ""})
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == "" and len(lines) == 3
    assert lines[1] == "Epoch 2/2: train loss 0.5000 acc 0.7500 | no validation | lr 0.001 | 2.0s"


def test_default_streams_and_liveness(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    bar = ProgressBar()
    assert bar.stream is terminal and bar.live
    assert not ProgressBar(terminal, live=False).live
    assert ProgressBar(io.StringIO(), live=True).live


def test_summary_line():
    line = epoch_summary(
        record(2, train_loss=0.30123, train_accuracy=0.88934, val_loss=0.312, val_accuracy=0.8871,
               epoch_seconds=8.07),
        15,
    )  # fmt: skip
    assert line == (
        "Epoch 3/15: train loss 0.3012 acc 0.8893 | val loss 0.3120 acc 0.8871 | lr 0.001 | 8.1s"
    )
    regression = record(0, train_accuracy=None, val_accuracy=None, train_loss=float("nan"))
    assert epoch_summary(regression, 1) == (
        "Epoch 1/1: train loss nan | val loss 0.2500 | lr 0.001 | 2.0s"
    )


def test_ctrl_c_mid_epoch_clears_the_line_and_escapes_the_reason(columns):
    terminal = Terminal()
    bar, clock, summaries = make_bar(terminal)
    run_epoch(bar, clock, batches=range(2))
    bar.on_train_end({"status": "interrupted", "reason": "Ctrl-C \x1b[2J\nat batch 2"})
    assert terminal.getvalue().endswith("\r" + " " * 39 + "\r")
    assert summaries.getvalue() == "Training interrupted: Ctrl-C \\x1b[2J\\nat batch 2\n"


def test_other_processes_show_nothing(columns):
    terminal = Terminal()
    bar, clock, summaries = make_bar(terminal, main=False)
    run_epoch(bar, clock)
    bar.on_epoch_end(0, record(0))
    bar.on_train_end({"status": "diverged", "reason": "loss became nan"})
    assert terminal.getvalue() == summaries.getvalue() == ""
