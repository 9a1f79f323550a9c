"""The training loop: it learns, resumes exactly, survives Ctrl-C, and stops on a NaN loss."""

import io
import json
import os
import signal

import numpy as np
import pytest

from glassnet.checkpoint import load_checkpoint
from glassnet.train import TrainConfig, train
from glassnet.train.callbacks import Callback

FAST = {"dataset": "mnist", "batch_size": 32, "seed": 3}


def weights(out_dir):
    arrays, meta = load_checkpoint(out_dir / "checkpoint.safetensors")
    return arrays, meta


def test_learns_and_writes_checkpoint_metrics_and_plots(tmp_path, tiny_arrays):
    metrics = train(
        TrainConfig(epochs=3, **FAST), tmp_path, data=tiny_arrays, quiet=True, stdout=io.StringIO()
    )
    assert metrics["status"] == "completed"
    assert metrics["test_accuracy"] > 0.9, metrics["epochs"]
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2, 3]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        assert all(np.isfinite(e[key]) for e in saved["epochs"])
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert np.array(saved["test_confusion_matrix"]).sum() == 200
    for png in ("curves.png", "confusion.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = weights(tmp_path)[1]["run"]
    assert run["epoch"] == 3 and run["step"] == 3 * 18  # 576 training images / 32
    assert (tmp_path / "history.csv").read_text().count("\n") == 4  # a header and 3 epochs


def test_resume_continues_exactly(tmp_path, tiny_arrays):
    quiet = {"data": tiny_arrays, "quiet": True, "plots": False, "stdout": io.StringIO()}
    train(TrainConfig(epochs=2, **FAST), tmp_path / "straight", **quiet)
    train(TrainConfig(epochs=1, **FAST), tmp_path / "split", **quiet)
    train(None, tmp_path / "split", resume=True, epochs=2, **quiet)
    straight, meta_a = weights(tmp_path / "straight")
    split, meta_b = weights(tmp_path / "split")
    assert straight.keys() == split.keys() and any(k.startswith("optim.") for k in split)
    for name in straight:
        np.testing.assert_array_equal(straight[name], split[name], err_msg=name)
    assert meta_a["run"]["rng"] == meta_b["run"]["rng"]
    assert meta_a["run"]["step"] == meta_b["run"]["step"]


def test_ctrl_c_saves_mid_epoch_and_resume_matches(tmp_path, tiny_arrays):
    quiet = {"data": tiny_arrays, "quiet": True, "plots": False}
    train(TrainConfig(epochs=2, **FAST), tmp_path / "straight", stdout=io.StringIO(), **quiet)

    class PressCtrlC(Callback):
        def on_train_batch_end(self, batch, logs):
            if self.trainer.step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    out = io.StringIO()
    metrics = train(
        TrainConfig(epochs=2, **FAST),
        tmp_path / "stopped",
        callbacks=[PressCtrlC()],
        stdout=out,
        **quiet,
    )
    assert metrics["status"] == "interrupted"
    run = weights(tmp_path / "stopped")[1]["run"]
    assert (run["epoch"], run["step"], run["batch_index"]) == (0, 5, 5)
    train(None, tmp_path / "stopped", resume=True, stdout=io.StringIO(), **quiet)
    straight, _ = weights(tmp_path / "straight")
    resumed, _ = weights(tmp_path / "stopped")
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_arrays):
    quiet = {"quiet": True, "plots": False, "stdout": io.StringIO()}
    train(TrainConfig(epochs=1, **FAST), tmp_path, data=tiny_arrays, **quiet)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    x_train, y_train, x_test, y_test = tiny_arrays
    poisoned = x_train.copy()
    poisoned[:] = np.nan
    metrics = train(
        None, tmp_path, resume=True, epochs=2, data=(poisoned, y_train, x_test, y_test), **quiet
    )
    assert metrics["status"] == "diverged" and "loss became nan at epoch 2" in metrics["reason"]
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_progress_bar_on_a_terminal_and_quiet_mode(tiny_arrays):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err, out = Terminal(), io.StringIO()
    train(TrainConfig(epochs=1, **FAST), data=tiny_arrays, stdout=out, stderr=err)
    assert "Epoch 1/1" in err.getvalue() and "img/s" in err.getvalue() and "ETA" in err.getvalue()
    assert "Epoch 1/1: train loss" in out.getvalue() and "val loss" in out.getvalue()
    err, out = Terminal(), io.StringIO()
    train(TrainConfig(epochs=1, **FAST), data=tiny_arrays, stdout=out, stderr=err, quiet=True)
    assert err.getvalue() == "" and "Epoch 1/1: train loss" in out.getvalue()


@pytest.mark.parametrize(
    "options,words",
    [
        ({"dataset": "cifar"}, "dataset='cifar'"),
        ({"optimizer": "adagrad"}, "optimizer='adagrad'"),
        ({"epochs": 0}, "epochs=0"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"schedule": "linear"}, "schedule"),
    ],
)
def test_bad_config(options, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**options)


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(None, tmp_path, resume=True)
