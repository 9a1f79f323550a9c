"""glassnet.fit: PyTorch's steps exactly, any model and data, exact resume, kill -9 safety."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import glassnet
from glassnet.checkpoint import load_checkpoint
from glassnet.nn import (
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MSELoss,
    ReLU,
    Sequential,
)
from glassnet.nn import loss as nn_loss
from glassnet.optim import SGD
from glassnet.train import History, evaluate, fit, predict
from glassnet.train.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]


def bn_model(seed=0, dropout=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 4, 3, padding=1, rng=rng, dtype=dtype),
        BatchNorm2d(4),
        ReLU(),
        Dropout(dropout, rng=rng),
        Flatten(),
        Linear(4 * 6 * 6, 3, rng=rng, dtype=dtype),
    ).to(dtype)


def toy_data(n=64, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.standard_normal((n, 1, 6, 6)).astype(dtype)
    x[np.arange(n), 0, y, y] += 3.0  # learnable: the class is where the bright pixel is
    return x, y


def test_fit_takes_exactly_the_steps_of_a_handwritten_pytorch_loop():
    torch = pytest.importorskip("torch")
    model = bn_model()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.0),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x, y = toy_data()

    history = fit(
        model,
        (x, y),
        optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9),
        epochs=3,
        batch_size=16,
        shuffle=False,
        verbose=0,
    )

    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    expected = []
    for _ in range(3):
        total = 0.0
        for start in range(0, len(x), 16):
            xb, yb = (
                torch.from_numpy(x[start : start + 16]),
                torch.from_numpy(y[start : start + 16]),
            )
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        expected.append(total / len(x))
    np.testing.assert_allclose(history["train_loss"], expected, rtol=1e-6)
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-9, atol=1e-12)


def test_regression_with_mse_reports_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]])
    model = Sequential(Linear(3, 1, rng=rng)).to(np.float64)
    history = fit(
        model,
        (x, y),
        loss_fn=MSELoss(),
        epochs=30,
        batch_size=8,
        val_fraction=0.25,
        optimizer=SGD(model.parameters(), lr=0.05),
        verbose=0,
    )
    assert history.history[-1]["train_accuracy"] is None
    assert history.history[-1]["val_accuracy"] is None
    assert history["train_loss"][-1] < 0.01 * history["train_loss"][0]
    assert evaluate(model, (x, y), loss_fn=MSELoss())["loss"] < 0.05
    assert predict(model, x).shape == (40, 1)


def test_classification_history_and_evaluate():
    x, y = toy_data(96)
    model = bn_model(dtype=np.float32)
    history = fit(
        model, (x.astype(np.float32), y), epochs=4, batch_size=16, val_fraction=0.25, verbose=0
    )
    assert isinstance(history, History) and history.status == "completed"
    assert [r["epoch"] for r in history.history] == [1, 2, 3, 4]
    assert set(history.history[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "epoch_seconds",
    }
    assert history["val_accuracy"][-1] > 0.6  # chance is 1/3
    result = evaluate(model, (x.astype(np.float32), y))
    assert np.array(result["confusion_matrix"]).sum() == 96 and 0 <= result["accuracy"] <= 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"val_data": "x", "val_fraction": 0.1}, "not both"),
        ({"verbose": 2}, "verbose=2"),
    ],
)
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=words):
        fit(bn_model(), toy_data(), **kwargs)


def test_bad_data_is_named():
    with pytest.raises(TypeError, match="train_data must be an"):
        fit(bn_model(), [1, 2, 3])
    with pytest.raises(ValueError, match="x has 64 samples but y has 3"):
        fit(bn_model(), (toy_data()[0], np.zeros(3)))


def _final_state(out_dir=None, epochs=3, **kwargs):
    model = bn_model(dropout=0.3)  # dropout draws from a Generator the checkpoint must hold
    fit(
        model,
        toy_data(),
        epochs=epochs,
        batch_size=16,
        val_fraction=0.25,
        out_dir=out_dir,
        verbose=0,
        **kwargs,
    )
    return model


def test_resume_is_bit_exact_for_batchnorm_and_dropout(tmp_path):
    straight = _final_state().state_dict()
    _final_state(tmp_path / "run", epochs=1)
    resumed = _final_state(tmp_path / "run", epochs=3, resume=True).state_dict()
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]


def test_an_out_dir_that_holds_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    _final_state(tmp_path / "run", epochs=1)
    with pytest.raises(FileExistsError, match="holds a run already"):
        _final_state(tmp_path / "run", epochs=1)
    _final_state(tmp_path / "run", epochs=1, overwrite=True)
    with pytest.raises(ValueError, match="batch_size=32 \\(the run used 16\\)"):
        fit(
            bn_model(dropout=0.3),
            toy_data(),
            epochs=2,
            batch_size=32,
            val_fraction=0.25,
            out_dir=tmp_path / "run",
            resume=True,
            verbose=0,
        )


KILLER = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_fit import bn_model, toy_data
import glassnet
from glassnet.train import fit
from glassnet.train.callbacks import Callback

class Kill(Callback):
    def on_train_batch_end(self, batch, logs):
        if self.trainer.epoch == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

if {during_write}:  # die in the second checkpoint write: its temporary file is complete
    import glassnet.checkpoint as checkpoint
    real_replace, writes = os.replace, []
    def replace(source, target):
        if str(target).endswith("checkpoint.safetensors"):
            writes.append(target)
            if len(writes) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)
    checkpoint.os.replace = replace

model = bn_model(dropout=0.3)
fit(model, toy_data(), epochs=3, batch_size=16, val_fraction=0.25, out_dir=sys.argv[1],
    verbose=0, callbacks=[] if {during_write} else [Kill()])
"""


@pytest.mark.parametrize("during_write", [False, True], ids=["mid-epoch", "mid-checkpoint-write"])
def test_kill_9_then_resume_gives_bit_identical_weights(tmp_path, during_write):
    out = tmp_path / "run"
    script = KILLER.format(tests=str(REPO / "tests"), during_write=during_write)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(out)], cwd=REPO)
    assert done.returncode == -signal.SIGKILL
    assert (out / "checkpoint.safetensors").exists()  # epoch 1's checkpoint survived
    if during_write:
        assert [p for p in out.iterdir() if p.name.endswith(".tmp")], "the kill left no temp file"
    resumed = _final_state(out, epochs=3, resume=True).state_dict()
    straight = _final_state().state_dict()
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_fit_is_exported_at_the_top_level():
    assert glassnet.fit is fit and glassnet.evaluate is evaluate and glassnet.predict is predict


class _EpochCounter(Callback):
    """A callback with a state: the epochs it has seen, over resumed runs too."""

    def __init__(self, state_key=None):
        self.epochs_seen, self.state_key = 0, state_key

    def on_epoch_end(self, epoch, logs):
        self.epochs_seen += 1

    def state_dict(self):
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state):
        self.epochs_seen = state["epochs_seen"]


def _counted_run(out_dir, epochs, callbacks, resume=False):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 1, 2, 2)).astype(np.float32), rng.integers(0, 2, size=40)
    model = Sequential(Flatten(), Linear(4, 2, rng=np.random.default_rng(1)))
    fit(model, (x, y), epochs=epochs, batch_size=8, verbose=0, out_dir=out_dir, resume=resume,
        callbacks=callbacks)  # fmt: skip


def test_a_callbacks_state_finds_it_when_others_are_added_on_resume(tmp_path):
    _counted_run(tmp_path, 2, [_EpochCounter()])
    counter = _EpochCounter()
    _counted_run(tmp_path, 3, [Callback(), counter], resume=True)
    assert counter.epochs_seen == 3


def test_two_callbacks_of_one_class_keep_their_states_by_state_key(tmp_path):
    _counted_run(tmp_path, 2, [_EpochCounter("a"), _EpochCounter("b")])
    a, b = _EpochCounter("a"), _EpochCounter("b")
    b.epochs_seen = 10
    _counted_run(tmp_path, 3, [b, a], resume=True)  # reordered: the keys, not the places, count
    assert (a.epochs_seen, b.epochs_seen) == (3, 3)
    _, metadata = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert set(metadata["run"]["callbacks"]) >= {"a", "b", "ModelCheckpoint[last]"}


def test_a_saved_state_no_callback_takes_is_a_warning_naming_it(tmp_path):
    _counted_run(tmp_path, 1, [_EpochCounter(), _EpochCounter()])
    counter = _EpochCounter()
    with pytest.warns(UserWarning, match=r"saved state of '_EpochCounter#2': it starts afresh"):
        _counted_run(tmp_path, 2, [counter], resume=True)
    assert counter.epochs_seen == 2


def test_evaluate_leaves_ignored_targets_out_and_takes_the_whole_sets_mean():
    """With PyTorch's ignore_index=-100 evaluate used to fail (an index into the confusion
    matrix); with class weights its loss was the mean of the batches' means."""
    from glassnet.functional import cross_entropy

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, size=50)
    y[rng.random(50) < 0.4] = -100
    model = Sequential(Linear(4, 3, rng=np.random.default_rng(9)))
    weight = np.array([1.0, 2.0, 0.5], np.float32)
    loss_fn = nn_loss.CrossEntropyLoss(weight=weight)
    result = evaluate(model, (x, y), loss_fn=loss_fn, batch_size=7)  # uneven batches
    out = model(x)
    assert result["loss"] == pytest.approx(float(cross_entropy(out, y, weight=weight)), rel=1e-5)
    counted = y >= 0
    accuracy = float((out.argmax(axis=1)[counted] == y[counted]).mean())
    assert result["accuracy"] == pytest.approx(accuracy)
    assert np.sum(result["confusion_matrix"]) == counted.sum()


def test_training_accuracy_leaves_ignored_targets_out_like_evaluate():
    """A target of -100 (ignore_index) is neither a hit nor a miss in train_accuracy (it used
    to count as a miss). With lr = 0 the model stays as it was, so the epoch's accuracy is
    that of the first model on the counted targets, the number evaluate gives."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(60, 4)).astype(np.float32), rng.integers(0, 3, size=60)
    y[rng.random(60) < 0.4] = -100
    model = Sequential(Linear(4, 3, rng=np.random.default_rng(9)))
    seen = []

    class Accuracies(Callback):
        def on_train_batch_end(self, batch, logs):
            seen.append(logs["accuracy_mean"])

    history = fit(model, (x, y), epochs=1, batch_size=7, verbose=0,
                  optimizer=SGD(model.parameters(), lr=0.0), callbacks=[Accuracies()])  # fmt: skip
    counted = y >= 0
    expected = float((model(x).argmax(axis=1)[counted] == y[counted]).mean())
    assert history["train_accuracy"][0] == pytest.approx(expected)
    assert seen[-1] == pytest.approx(expected)
    assert evaluate(model, (x, y))["accuracy"] == pytest.approx(expected)


def test_a_best_checkpoint_keeps_its_best_when_the_last_one_is_named_before_it(tmp_path):
    """fit's own ModelCheckpoint(save="last") and a user's save="best" one are keyed by what
    they save, not by their order, so the best value survives a resume that lists them the
    other way round (it would otherwise restart, and a worse model could replace the best)."""
    from glassnet.train.callbacks import ModelCheckpoint

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 2, size=40)

    def run(epochs, callbacks, resume=False):
        model = Sequential(Linear(4, 2, rng=np.random.default_rng(1)))
        fit(model, (x, y), epochs=epochs, batch_size=8, verbose=0, val_fraction=0.25,
            out_dir=tmp_path, resume=resume, callbacks=callbacks)  # fmt: skip

    run(1, [ModelCheckpoint(tmp_path, save="best")])
    _, metadata = load_checkpoint(tmp_path / "checkpoint.safetensors")
    states = metadata["run"]["callbacks"]
    assert {"ModelCheckpoint[best:val_loss]", "ModelCheckpoint[last]"} <= set(states)

    class Recording(ModelCheckpoint):
        def load_state_dict(self, state):
            self.loaded = state
            super().load_state_dict(state)

    best = Recording(tmp_path, save="best")
    run(2, [ModelCheckpoint(tmp_path, save="last"), best], resume=True)
    assert best.loaded == states["ModelCheckpoint[best:val_loss]"]
    assert best.loaded["best"] is not None


def test_a_checkpoint_keyed_by_position_still_resumes_its_callbacks(tmp_path):
    _counted_run(tmp_path, 2, [_EpochCounter()])
    path = tmp_path / "checkpoint.safetensors"
    arrays, metadata = load_checkpoint(path)
    metadata["run"]["callbacks"] = {"0._EpochCounter": {"epochs_seen": 2}}  # the older keys
    from glassnet.checkpoint import save_checkpoint

    save_checkpoint(path, arrays, metadata)
    counter = _EpochCounter()
    _counted_run(tmp_path, 3, [counter], resume=True)
    assert counter.epochs_seen == 3
