"""fit's callbacks, each driven alone by a fake trainer and synthetic epoch records."""

import csv
import json
import math
import os
import re

import numpy as np
import pytest

from glassnet.checkpoint import save_checkpoint
from glassnet.model_file import load_model
from glassnet.nn import Linear
from glassnet.optim import SGD, StepLR
from glassnet.train.callbacks import (
    CSVLogger,
    EarlyStopping,
    JSONLogger,
    LRScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


class FakeTrainer:
    """The attributes and methods fit gives callbacks, over a Linear(3, 2) and SGD."""

    def __init__(self, has_validation=True, is_main_process=True):
        self.model = Linear(3, 2, rng=np.random.default_rng(0))
        self.optimizer = SGD(self.model.parameters(), lr=1.0)
        self.epochs, self.num_batches, self.batch_size = 20, 1, 4
        self.epoch = self.step = 0
        self.history = []
        self.has_validation, self.is_main_process = has_validation, is_main_process
        self.stop_training, self.status, self.reason = False, "completed", ""

    def stop(self, status, reason=""):
        self.stop_training, self.status, self.reason = True, status, reason

    def weights_finite(self):
        return all(np.isfinite(p.data).all() for p in self.model.parameters())

    def save_checkpoint(self, path):
        save_checkpoint(path, self.model.state_dict(), {"epoch": self.epoch})

    def set_weights(self, value):
        for param in self.model.parameters():
            param.data[...] = value


def make_record(epoch, lr=1.0, **values):
    record = {
        "epoch": epoch + 1,
        "train_loss": 1.0,
        "train_accuracy": 0.5,
        "val_loss": 1.0,
        "val_accuracy": 0.5,
        "lr": lr,
        "epoch_seconds": 1.0,
    }
    return record | values


def run(callback, trainer, values, key="val_loss", first_epoch=0, before_end=None, begin=True):
    """Drive ``callback`` as fit does through epochs whose ``key`` takes ``values``.

    Returns the 0-based epochs that ran. ``before_end(epoch)`` runs after the epoch's
    training (e.g. to change the weights), before its record is handed out.
    """
    callback.set_trainer(trainer)
    if begin:
        callback.on_train_begin({})
    ran = []
    for epoch, value in enumerate(values, start=first_epoch):
        trainer.epoch = epoch
        if before_end is not None:
            before_end(epoch)
        record = make_record(epoch, lr=trainer.optimizer.lr, **{key: value})
        trainer.history.append(record)
        trainer.epoch = epoch + 1
        ran.append(epoch)
        callback.on_epoch_end(epoch, record)
        if trainer.stop_training:
            break
    callback.on_train_end({"status": trainer.status, "reason": trainer.reason})
    return ran


# --- EarlyStopping ------------------------------------------------------------------------------

STOPS = [
    # monitor, options, values, the 0-based epoch it stops after (None: never)
    ("val_loss", {"patience": 2}, [1.0, 0.8, 0.9, 0.85, 0.7], 3),
    ("val_loss", {"patience": 0}, [1.0, 0.8, 0.9, 0.7], 2),
    ("val_loss", {"patience": 1}, [1.0, 0.8, 0.7, 0.6], None),
    ("val_loss", {"patience": 1, "min_delta": 0.1}, [1.0, 0.95, 0.85], 1),
    ("val_loss", {"patience": 1, "min_delta": 0.1}, [1.0, 0.85, 0.7], None),
    ("val_loss", {"patience": 1, "mode": "max"}, [1.0, 1.1, 1.05], 2),
    ("val_accuracy", {"patience": 1}, [0.5, 0.6, 0.55, 0.9], 2),
    ("val_accuracy", {"patience": 1, "min_delta": 0.05}, [0.5, 0.52, 0.6], 1),
    ("train_accuracy", {"patience": 2, "mode": "min"}, [0.5, 0.4, 0.45, 0.6, 0.3], 3),
    ("val_loss", {"patience": 0, "start_from_epoch": 2}, [1.0, 2.0, 3.0, 0.5, 0.6], 4),
    ("val_loss", {"patience": 0}, [1.0, 2.0, 3.0, 0.5, 0.6], 1),
    ("val_loss", {"patience": 1}, [float("nan"), float("nan")], 1),
]


@pytest.mark.parametrize("monitor, options, values, stop", STOPS)
def test_early_stopping_stops_at_keras_epoch(monitor, options, values, stop):
    trainer = FakeTrainer()
    ran = run(EarlyStopping(monitor, **options), trainer, values, key=monitor)
    if stop is None:
        assert ran == list(range(len(values))) and trainer.status == "completed"
    else:
        assert ran[-1] == stop and trainer.status == "stopped"
        assert monitor in trainer.reason


def test_early_stopping_restores_the_exact_best_weights():
    trainer = FakeTrainer()
    weights = {}

    def train_epoch(epoch):  # distinct weights each epoch, remembered
        trainer.set_weights(np.random.default_rng(epoch).normal(size=1))
        weights[epoch] = trainer.model.state_dict()

    callback = EarlyStopping(patience=2, restore_best_weights=True)
    ran = run(callback, trainer, [1.0, 0.5, 0.7, 0.6, 0.1], before_end=train_epoch)
    assert ran == [0, 1, 2, 3] and callback.best_epoch == 1
    final = trainer.model.state_dict()
    assert final.keys() == weights[1].keys()
    for name in final:
        np.testing.assert_array_equal(final[name], weights[1][name])
        assert not np.array_equal(final[name], weights[3][name])


def test_early_stopping_restores_nothing_when_it_did_not_stop():
    trainer = FakeTrainer()
    callback = EarlyStopping(patience=5, restore_best_weights=True)
    run(callback, trainer, [1.0, 2.0], before_end=lambda epoch: trainer.set_weights(epoch))
    assert all((p.data == 1).all() for p in trainer.model.parameters())


def test_early_stopping_resumes_from_its_state():
    values = [1.0, 0.8, 0.9, 0.95, 0.97, 0.99]
    straight = run(EarlyStopping(patience=3), FakeTrainer(), values)
    first = EarlyStopping(patience=3)
    run(first, FakeTrainer(), values[:3])
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"best": 0.8, "wait": 1, "best_epoch": 1}
    resumed = EarlyStopping(patience=3)
    resumed.load_state_dict(state)
    rest = run(resumed, FakeTrainer(), values[3:], first_epoch=3)
    assert straight[-1] == rest[-1] == 4


def test_early_stopping_starts_afresh_in_a_new_run():
    callback = EarlyStopping(patience=1)
    run(callback, FakeTrainer(), [1.0, 2.0])
    trainer = FakeTrainer()
    assert run(callback, trainer, [5.0, 4.0, 3.0]) == [0, 1, 2]
    assert callback.best == 3.0


@pytest.mark.parametrize("cls", [EarlyStopping, ReduceLROnPlateau])
def test_monitoring_validation_without_validation_data_fails_at_train_begin(cls):
    callback = cls(monitor="val_accuracy")
    callback.set_trainer(FakeTrainer(has_validation=False))
    with pytest.raises(ValueError, match=r"val_accuracy.*validation data"):
        callback.on_train_begin({})


@pytest.mark.parametrize("cls", [EarlyStopping, ReduceLROnPlateau])
def test_monitoring_a_missing_accuracy_is_an_error(cls):
    with pytest.raises(ValueError, match=r"train_accuracy.*no value in epoch 1"):
        run(cls(monitor="train_accuracy"), FakeTrainer(), [None], key="train_accuracy")


@pytest.mark.parametrize(
    "options, words",
    [
        ({"patience": -1}, "patience=-1"),
        ({"patience": 1.5}, "patience=1.5"),
        ({"mode": "up"}, "mode='up'"),
        ({"monitor": "loss"}, "monitor='loss'"),
        ({"min_delta": -0.1}, "min_delta=-0.1"),
        ({"min_delta": float("nan")}, "min_delta=nan"),
        ({"start_from_epoch": -2}, "start_from_epoch=-2"),
    ],
)
def test_early_stopping_rejects_bad_arguments(options, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        EarlyStopping(**options)


# --- TerminateOnNaN -----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_terminate_on_nan_stops_a_one_batch_epoch(loss):
    trainer = FakeTrainer()
    callback = TerminateOnNaN()
    callback.set_trainer(trainer)
    trainer.epoch, trainer.step = 4, 5
    logs = {"loss": loss, "size": 4, "loss_mean": loss, "accuracy_mean": None, "seen": 4}
    callback.on_train_batch_end(0, logs)
    assert trainer.stop_training and trainer.status == "diverged"
    assert trainer.reason == f"loss became {loss} at epoch 5, step 5"


def test_terminate_on_nan_leaves_finite_losses_alone():
    trainer = FakeTrainer()
    callback = TerminateOnNaN()
    callback.set_trainer(trainer)
    callback.on_train_batch_end(0, {"loss": 1e30, "size": 4})
    assert not trainer.stop_training and trainer.status == "completed"


# --- learning rate ------------------------------------------------------------------------------


def test_lr_scheduler_steps_once_per_epoch_and_delegates_its_state():
    trainer = FakeTrainer()
    callback = LRScheduler(StepLR(trainer.optimizer, step_size=2, gamma=0.1))
    lrs = []
    run(callback, trainer, [1.0] * 5, before_end=lambda epoch: lrs.append(trainer.optimizer.lr))
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    assert callback.state_dict() == {"base_lr": 1.0, "last_epoch": 5}
    other = FakeTrainer()
    resumed = LRScheduler(StepLR(other.optimizer, step_size=2, gamma=0.1))
    resumed.load_state_dict(json.loads(json.dumps(callback.state_dict())))
    assert other.optimizer.lr == pytest.approx(0.01)  # 0.1 ** (5 // 2)


def test_lr_scheduler_checks_what_it_is_given():
    with pytest.raises(TypeError, match=r"glassnet\.optim\.LRScheduler"):
        LRScheduler(0.1)
    callback = LRScheduler(StepLR(FakeTrainer().optimizer, step_size=1))
    callback.set_trainer(FakeTrainer())
    with pytest.raises(ValueError, match="another optimizer"):
        callback.on_train_begin({})


# Written by hand from Keras's rule (ReduceLROnPlateau.on_epoch_end): the lr after each epoch.
PLATEAUS = [
    (
        "val_loss",
        {"factor": 0.5, "patience": 2, "cooldown": 1, "min_delta": 0.0, "min_lr": 0.1},
        [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85],
        [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1],
    ),
    (
        "val_accuracy",
        {"factor": 0.1, "patience": 1, "min_delta": 0.05},
        [0.5, 0.52, 0.6, 0.61],
        [1, 0.1, 0.1, 0.01],
    ),
    (
        "val_loss",
        {"factor": 0.1, "patience": 0},
        [1.0, 1.0, 0.5],
        [1, 0.1, 0.1],
    ),
    (
        "val_loss",  # the default min_delta 1e-4: 0.99995 is no improvement on 1.0
        {"factor": 0.5, "patience": 1},
        [1.0, 0.99995, 0.9, float("nan")],
        [1, 0.5, 0.5, 0.25],
    ),
    (
        "val_loss",  # the counter drops before the check: cooldown=2 rests one epoch, not two
        {"factor": 0.5, "patience": 1, "cooldown": 2},
        [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        [1, 0.5, 0.5, 0.25, 0.25, 0.125],
    ),
]


@pytest.mark.parametrize("monitor, options, values, lrs", PLATEAUS)
def test_reduce_lr_on_plateau_follows_keras(monitor, options, values, lrs):
    trainer = FakeTrainer()
    after = []
    callback = ReduceLROnPlateau(monitor, **options)
    callback.set_trainer(trainer)
    callback.on_train_begin({})
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, make_record(epoch, **{monitor: value}))
        after.append(trainer.optimizer.lr)
    assert after == pytest.approx(lrs)


def test_reduce_lr_on_plateau_resumes_from_its_state():
    _, options, values, lrs = PLATEAUS[0]
    trainer = FakeTrainer()
    first = ReduceLROnPlateau(**options)
    run(first, trainer, values[:5])
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"best": 0.9, "wait": 1, "cooldown_counter": 0}
    resumed = ReduceLROnPlateau(**options)
    resumed.load_state_dict(state)
    after = []
    run(resumed, trainer, values[5:], first_epoch=5, before_end=lambda e: after.append(e))
    assert trainer.optimizer.lr == pytest.approx(lrs[-1]) and len(after) == 9


@pytest.mark.parametrize(
    "options, words",
    [
        ({"factor": 1.0}, "factor=1.0"),
        ({"factor": 0}, "factor=0"),
        ({"factor": True}, "factor=True"),
        ({"patience": -1}, "patience=-1"),
        ({"cooldown": -1}, "cooldown=-1"),
        ({"min_lr": -1e-3}, "min_lr=-0.001"),
        ({"monitor": "val_acc"}, "monitor='val_acc'"),
    ],
)
def test_reduce_lr_on_plateau_rejects_bad_arguments(options, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        ReduceLROnPlateau(**options)


# --- ModelCheckpoint ----------------------------------------------------------------------------


def test_checkpoint_last_never_overwrites_a_good_file_with_diverged_weights(tmp_path):
    trainer = FakeTrainer()
    callback = ModelCheckpoint(tmp_path, save="last")
    path = tmp_path / "checkpoint.safetensors"
    good = []

    def train_epoch(epoch):
        if epoch == 0:
            return
        good.append(path.read_bytes())
        trainer.set_weights(np.nan if epoch == 1 else 2.0)

    # epoch 1: NaN weights; epoch 2: finite weights but a NaN loss. Neither is written.
    run(callback, trainer, [1.0, 1.0, float("nan")], key="train_loss", before_end=train_epoch)
    assert path.read_bytes() == good[0] == good[1]
    trainer.set_weights(np.inf)
    callback.on_train_end({"status": "interrupted"})  # a Ctrl-C with diverged weights
    assert path.read_bytes() == good[0]


def test_checkpoint_last_writes_every_epoch_and_on_ctrl_c(tmp_path):
    trainer = FakeTrainer(has_validation=False)
    callback = ModelCheckpoint(tmp_path)
    path = tmp_path / "checkpoint.safetensors"
    written = []
    run(callback, trainer, [1.0, 0.5], key="val_loss", before_end=lambda e: trainer.set_weights(e))
    written.append(path.read_bytes())
    trainer.set_weights(7.0)
    for status in ("completed", "stopped", "diverged"):
        callback.on_train_end({"status": status})
        assert path.read_bytes() == written[0], status
    callback.on_train_end({"status": "interrupted"})
    assert path.read_bytes() != written[0]


def test_checkpoint_best_keeps_the_best_model(tmp_path):
    trainer = FakeTrainer()
    callback = ModelCheckpoint(tmp_path, save="best", monitor="val_accuracy")
    path = tmp_path / "best.safetensors"
    snapshots = {}

    def train_epoch(epoch):
        snapshots[epoch] = path.read_bytes() if path.exists() else None
        trainer.set_weights(np.nan if epoch == 3 else float(epoch))

    values = [0.5, 0.7, 0.6, 0.9, float("nan"), 0.7]
    run(callback, trainer, values, key="val_accuracy", before_end=train_epoch)
    # written after epochs 0 and 1; 2 is worse, 3 has NaN weights, 4 a NaN value, 5 is worse
    assert snapshots[1] is not None and snapshots[2] != snapshots[1]
    assert path.read_bytes() == snapshots[2] == snapshots[3] == snapshots[4] == snapshots[5]
    assert all((p.data == 1.0).all() for p in load_model(path).parameters())
    assert callback.state_dict() == {"best": 0.7}


def test_checkpoint_best_resumes_with_its_best(tmp_path):
    first = ModelCheckpoint(tmp_path, save="best")
    run(first, FakeTrainer(), [0.5])
    written = (tmp_path / "best.safetensors").read_bytes()
    resumed = ModelCheckpoint(tmp_path, save="best")
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    trainer = FakeTrainer()
    run(resumed, trainer, [0.6], first_epoch=1, before_end=lambda e: trainer.set_weights(3.0))
    assert (tmp_path / "best.safetensors").read_bytes() == written


def test_checkpoint_writes_nothing_outside_the_main_process(tmp_path):
    for save in ("last", "best"):
        callback = ModelCheckpoint(tmp_path, save=save)
        run(callback, FakeTrainer(is_main_process=False), [1.0, 0.5])
        callback.on_train_end({"status": "interrupted"})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_checks_its_arguments():
    with pytest.raises(ValueError, match="save='first' must be one of 'last', 'best'"):
        ModelCheckpoint("out", save="first")
    with pytest.raises(ValueError, match="mode='maximum'"):
        ModelCheckpoint("out", mode="maximum")
    callback = ModelCheckpoint("out", save="best")
    callback.set_trainer(FakeTrainer(has_validation=False))
    with pytest.raises(ValueError, match="val_loss"):
        callback.on_train_begin({})


# --- CSVLogger ----------------------------------------------------------------------------------


def read_rows(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def test_csv_logger_rows_are_on_disk_after_each_epoch(tmp_path, monkeypatch):
    path = tmp_path / "logs" / "history.csv"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    seen = []
    trainer = FakeTrainer()

    def between(epoch):
        seen.append(read_rows(path) if path.exists() else [])

    run(CSVLogger(path), trainer, [0.5, None, 0.25], before_end=between)
    header = list(make_record(0))
    assert seen[0] == [] and len(seen[1]) == 2 and len(seen[2]) == 3
    rows = read_rows(path)
    assert rows[0] == header and len(rows) == 4 and len(synced) == 3
    assert rows[1][header.index("val_loss")] == "0.5"
    assert rows[2][header.index("val_loss")] == ""
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]


def test_csv_logger_appends_for_a_resumed_run_and_truncates_otherwise(tmp_path):
    path = tmp_path / "history.csv"
    run(CSVLogger(path, separator=";"), FakeTrainer(), [0.5, 0.4])
    run(CSVLogger(path, separator=";", append=True), FakeTrainer(), [0.3], first_epoch=2)
    rows = read_rows(path, ";")
    assert rows[0] == list(make_record(0)) and [row[0] for row in rows] == ["epoch", "1", "2", "3"]
    logger = CSVLogger(path, separator=";")
    logger.set_trainer(FakeTrainer())
    logger.on_train_begin({})
    assert path.read_bytes() == b""


def test_csv_logger_refuses_to_append_to_other_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="its columns are"):
        run(CSVLogger(path, append=True), FakeTrainer(), [0.5])
    assert path.read_text() == "epoch,loss\n1,0.5\n"


def test_csv_logger_checks_its_arguments_and_the_main_process(tmp_path):
    for separator in ("", ";;", '"', "\n", 1):
        with pytest.raises(ValueError, match="separator="):
            CSVLogger(tmp_path / "h.csv", separator=separator)
    run(CSVLogger(tmp_path / "h.csv"), FakeTrainer(is_main_process=False), [0.5])
    assert not (tmp_path / "h.csv").exists()


# --- JSONLogger ---------------------------------------------------------------------------------


def strict_load(path):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_json_logger_writes_strict_json_every_epoch(tmp_path):
    path = tmp_path / "metrics.json"
    trainer = FakeTrainer()
    logger = JSONLogger(path, extra={"config": {"lr": np.float32(0.5), "limit": math.inf}})
    seen = []
    run(
        logger,
        trainer,
        [float("nan"), float("-inf"), 0.5],
        before_end=lambda e: seen.append(strict_load(path) if path.exists() else None),
    )
    assert seen[0] is None and len(seen[1]["epochs"]) == 1 and len(seen[2]["epochs"]) == 2
    metrics = strict_load(path)
    assert metrics["status"] == "completed" and "reason" not in metrics
    assert [e["val_loss"] for e in metrics["epochs"]] == [None, None, 0.5]
    assert metrics["config"] == {"lr": 0.5, "limit": None}
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_json_logger_records_why_a_run_ended(tmp_path):
    path = tmp_path / "metrics.json"
    run(JSONLogger(path), FakeTrainer(), [1.0, 2.0, 3.0], key="val_loss")
    trainer = FakeTrainer()
    logger = JSONLogger(path)
    logger.set_trainer(trainer)
    logger.on_train_end({"status": "diverged", "reason": "loss became nan at epoch 1, step 3"})
    metrics = strict_load(path)
    assert metrics == {
        "status": "diverged",
        "reason": "loss became nan at epoch 1, step 3",
        "epochs": [],
    }


def test_json_logger_checks_extra(tmp_path):
    with pytest.raises(ValueError, match=r"\['epochs', 'status'\]"):
        JSONLogger(tmp_path / "m.json", extra={"epochs": 1, "status": 2})
    with pytest.raises(TypeError, match="extra must be a dict"):
        JSONLogger(tmp_path / "m.json", extra=[1])
    with pytest.raises(TypeError, match="cannot write"):
        JSONLogger(tmp_path / "m.json", extra={"when": object()})
    run(JSONLogger(tmp_path / "m.json"), FakeTrainer(is_main_process=False), [0.5])
    assert not (tmp_path / "m.json").exists()
