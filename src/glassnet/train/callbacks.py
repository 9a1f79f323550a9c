"""Callbacks for :func:`glassnet.fit`: one small class per concern, with Keras's names.

fit calls these hooks on every callback, in list order (``epoch`` is 0-based, as in Keras):

=====================================  =====================================================
hook                                   used by
=====================================  =====================================================
``on_train_begin(logs)``               EarlyStopping, ReduceLROnPlateau, ModelCheckpoint
                                       (check the monitor, start afresh), CSVLogger, LRScheduler
``on_epoch_begin(epoch, logs)``        ProgressBar (:mod:`.progress`)
``on_train_batch_begin(batch, logs)``  none
``on_train_batch_end(batch, logs)``    TerminateOnNaN, ProgressBar
``on_epoch_end(epoch, record)``        all but TerminateOnNaN
``on_train_end(logs)``                 JSONLogger, ModelCheckpoint (on Ctrl-C), EarlyStopping
                                       (restores the best weights), ProgressBar
=====================================  =====================================================

``record`` is the epoch's entry of ``trainer.history`` (keys: epoch (1-based), train_loss,
train_accuracy, val_loss, val_accuracy, lr, epoch_seconds); ``on_train_end``'s logs hold
``status`` ("completed", "stopped", "interrupted" or "diverged") and ``reason``. Only the
main process (``trainer.is_main_process``) writes files or prints: in a data-parallel run fit
calls a callback whose ``main_process_only`` is True on rank 0 alone (the file writers
below, and every callback fit adds itself); the others run on every rank, so that they decide
alike. A callback's ``state_dict()`` goes into resumable checkpoints; fit calls
``load_state_dict`` before ``on_train_begin`` when it resumes, and the counters then continue
instead of starting afresh. States are saved under each callback's ``state_key`` (its class
name by default; "#2" for the second of a name; the monitoring callbacks name their monitor,
and ModelCheckpoint what it saves), so a resumed run may add, drop or reorder callbacks; give
two callbacks of one class distinct ``state_key`` values if their order may change.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from glassnet import optim
from glassnet.checkpoint import atomic_write
from glassnet.model_file import save_model
from glassnet.nn import Module

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
MODES = ("auto", "min", "max")


class Trainer(Protocol):
    """What a callback may read and call on the run fit passes to :meth:`Callback.set_trainer`."""

    model: Module
    optimizer: optim.Optimizer
    epochs: int  # total
    num_batches: int  # per epoch
    batch_size: int
    epoch: int  # 0-based, the current one
    step: int  # optimizer steps so far
    history: list[dict[str, Any]]  # one record per completed epoch
    has_validation: bool
    is_main_process: bool
    stop_training: bool

    def stop(self, status: str, reason: str) -> None: ...
    def save_checkpoint(self, path: str | os.PathLike) -> None: ...
    def weights_finite(self) -> bool: ...


class Callback:
    """Base class; every hook does nothing. fit sets ``self.trainer`` before on_train_begin."""

    trainer: Trainer
    main_process_only = False  # True: only rank 0 of a data-parallel run calls the hooks
    state_key: str | None = None  # the name of state_dict() in checkpoints (None: the class's)

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict) -> None: ...

    def state_dict(self) -> dict:
        """What a resumed run needs to continue this callback (JSON-able)."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


# --- argument checks --------------------------------------------------------------------------


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")
    return value


def _count(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0")
    return int(value)


def _amount(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return float(value)


class _Monitor:
    """One metric of the epoch record, its direction, and what counts as an improvement.

    mode "auto" maximises names containing "acc" and minimises the rest (Keras's rule).
    ``current`` improves on ``best`` when it is better by more than ``min_delta``; the first
    finite value always does, and a NaN or infinite value never does (so ``best`` stays finite).
    """

    def __init__(self, monitor: Any, mode: Any, min_delta: Any = 0.0) -> None:
        self.name = _choice("monitor", monitor, METRICS)
        mode = _choice("mode", mode, MODES)
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.min_delta = _amount("min_delta", min_delta)

    def check(self, trainer: Trainer) -> None:
        if self.name.startswith("val_") and not trainer.has_validation:
            raise ValueError(
                f"monitor={self.name!r} needs validation data: give fit val_data or "
                f"val_fraction, or monitor {self.name.replace('val_', 'train_')!r}"
            )

    def value(self, record: dict) -> float:
        value = record.get(self.name)
        if value is None:
            raise ValueError(
                f"monitor={self.name!r} has no value in epoch {record.get('epoch')}'s record "
                f"(accuracy is None for a model that does not classify)"
            )
        return float(value)

    def improves(self, current: float, best: float | None) -> bool:
        if not math.isfinite(current):
            return False
        if best is None:
            return True
        if self.maximize:
            return current > best + self.min_delta
        return current < best - self.min_delta


class _RunCounters(Callback):
    """A callback whose counters start afresh in each run unless fit restored a resumed run's."""

    _restored = False

    def reset(self) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self._restored:
            self.reset()
        self._restored = False

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        for key in self.state_dict():  # the state's keys are the counters' attribute names
            setattr(self, key, state[key])
        self._restored = True


# --- stopping -----------------------------------------------------------------------------------


class EarlyStopping(_RunCounters):
    """Stop when ``monitor`` has not improved for ``patience`` epochs, as keras EarlyStopping.

    Each epoch from ``start_from_epoch`` (0-based) on adds one to ``wait``; an improvement
    (better than the best by more than ``min_delta``) resets it. When ``wait >= patience``
    (after the first epoch) the run stops with status "stopped". ``restore_best_weights``
    keeps a copy of the best epoch's ``model.state_dict()`` in memory and loads it at train
    end if this callback stopped the run (Keras 2 restores at the stop, Keras 3 at every train
    end). The copy is not in ``state_dict()``: after a resume only weights of epochs run since
    are restored; ModelCheckpoint(save="best") keeps the best weights on disk.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        self.monitor = _Monitor(monitor, mode, min_delta)
        self.state_key = f"EarlyStopping[{self.monitor.name}]"  # its state in checkpoints
        self.patience = _count("patience", patience)
        self.start_from_epoch = _count("start_from_epoch", start_from_epoch)
        self.restore_best_weights = bool(restore_best_weights)
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, np.ndarray] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.monitor.check(self.trainer)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        current = self.monitor.value(logs)
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self.monitor.improves(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop("stopped", self._reason())

    def _reason(self) -> str:
        best = "no finite value yet"
        if self.best is not None:
            best = f"best {self.best:.4g} at epoch {self.best_epoch + 1}"
        return f"{self.monitor.name} did not improve for {self.wait} epochs ({best})"

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch is not None and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch}


class TerminateOnNaN(Callback):
    """Stop with status "diverged" after the first batch whose loss is NaN or infinite.

    It looks at every batch's own loss, so it stops even an epoch of one batch; as
    keras.callbacks.TerminateOnNaN.
    """

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            trainer = self.trainer
            trainer.stop(
                "diverged",
                f"loss became {loss} at epoch {trainer.epoch + 1}, step {trainer.step}",
            )


# --- learning rate ------------------------------------------------------------------------------


class LRScheduler(Callback):
    """Step a :class:`glassnet.optim.LRScheduler` (StepLR, CosineAnnealingLR) after each epoch.

    The scheduler must drive fit's optimizer. ``state_dict()`` is the scheduler's.
    """

    def __init__(self, scheduler: optim.LRScheduler) -> None:
        if not isinstance(scheduler, optim.LRScheduler):
            raise TypeError(
                f"scheduler must be a glassnet.optim.LRScheduler (StepLR, CosineAnnealingLR), "
                f"got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.scheduler.optimizer is not self.trainer.optimizer:
            raise ValueError("the scheduler was built on another optimizer than fit's")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict:
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class ReduceLROnPlateau(_RunCounters):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls, as Keras's.

    Keras's rule, each epoch: during a cooldown, count it down and set ``wait = 0``. An
    improvement (better than the best by more than ``min_delta``) sets best and ``wait = 0``;
    otherwise, out of cooldown, ``wait += 1``, and at ``wait >= patience``, if ``lr > min_lr``:
    ``lr = max(lr * factor, min_lr)``, ``wait = 0``, cooldown starts (``cooldown`` epochs).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        self.monitor = _Monitor(monitor, mode, min_delta)
        self.state_key = f"ReduceLROnPlateau[{self.monitor.name}]"
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
            raise ValueError(f"factor={factor!r} must be a number in (0, 1)")
        self.factor = float(factor)
        self.patience = _count("patience", patience)
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = _amount("min_lr", min_lr)
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.monitor.check(self.trainer)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        current = self.monitor.value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor.improves(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce()

    def _reduce(self) -> None:
        optimizer = self.trainer.optimizer
        if optimizer.lr > self.min_lr:
            optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
            self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}


# --- files ----------------------------------------------------------------------------------------


def _losses_finite(record: dict) -> bool:
    return all(
        value is None or math.isfinite(value)
        for key, value in record.items()
        if key.endswith("_loss")
    )


class ModelCheckpoint(_RunCounters):
    """Keep the run on disk: save="last" a resumable checkpoint, save="best" the best model.

    "last": ``trainer.save_checkpoint(directory / "checkpoint.safetensors")`` after every epoch
    and at a Ctrl-C (status "interrupted", mid-epoch). ``monitor`` is not used.
    "best": ``save_model`` to ``directory / "best.safetensors"`` when ``monitor`` improves on
    its best (strictly, as Keras's save_best_only; mode as EarlyStopping's); ``input_shape`` and
    ``classes`` are stored for ``glassnet predict``. Nothing is ever written from weights that
    are not all finite, or for an epoch whose losses (or monitored value) are NaN or infinite,
    so a diverged run never overwrites a good file. ``state_dict()`` holds the best value.
    """

    main_process_only = True

    def __init__(
        self,
        directory: str | os.PathLike,
        save: str = "last",
        monitor: str = "val_loss",
        mode: str = "auto",
        *,
        input_shape: tuple[int, ...] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.save = _choice("save", save, ("last", "best"))
        self.monitor = _Monitor(monitor, mode)
        # its state in checkpoints: fit's own "last" checkpoint and a user's "best" one apart
        watched = f":{self.monitor.name}" if self.save == "best" else ""
        self.state_key = f"ModelCheckpoint[{self.save}{watched}]"
        self.input_shape, self.classes = input_shape, classes
        self.reset()

    @property
    def path(self) -> Path:
        name = "checkpoint.safetensors" if self.save == "last" else "best.safetensors"
        return self.directory / name

    def reset(self) -> None:
        self.best: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.save == "best":
            self.monitor.check(self.trainer)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if not (self.trainer.weights_finite() and _losses_finite(logs)):
            return
        if self.save == "last":
            self._write_checkpoint()
            return
        current = self.monitor.value(logs)
        if self.monitor.improves(current, self.best):
            self.best = current
            if self.trainer.is_main_process:
                model, shape, classes = self.trainer.model, self.input_shape, self.classes
                save_model(model, self.path, input_shape=shape, classes=classes)

    def on_train_end(self, logs: dict | None = None) -> None:
        status = (logs or {}).get("status")
        if self.save == "last" and status == "interrupted" and self.trainer.weights_finite():
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        if self.trainer.is_main_process:
            self.trainer.save_checkpoint(self.path)

    def state_dict(self) -> dict:
        return {"best": self.best}


def _cell(value: Any) -> Any:
    return "" if value is None else value


class CSVLogger(Callback):
    """One row per epoch record in a CSV file, flushed and fsync'ed as each epoch ends.

    The header is the record's keys in record order; None is written as an empty cell.
    ``append=False`` empties the file when training begins; ``append=True`` continues an
    existing file (a resumed run) without repeating its header, and refuses a file whose
    header differs from the records' keys. As keras.callbacks.CSVLogger.
    """

    main_process_only = True

    def __init__(self, path: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        if not isinstance(separator, str) or len(separator) != 1 or separator in '\r\n"':
            raise ValueError(
                f"separator={separator!r} must be one character, not a quote or newline"
            )
        self.path, self.separator, self.append = Path(path), separator, bool(append)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.trainer.is_main_process and not self.append:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")

    def _header(self) -> list[str] | None:
        if not self.path.exists():
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f, delimiter=self.separator), None)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if not self.trainer.is_main_process:
            return
        keys = list(logs)
        header = self._header()
        if header is not None and header != keys:
            raise ValueError(
                f"cannot append to {self.path}: its columns are {header}, the records' {keys}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if header is None:
                writer.writerow(keys)
            writer.writerow([_cell(logs[key]) for key in keys])
            f.flush()
            os.fsync(f.fileno())


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None and NumPy values as Python ones (valid JSON)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


class JSONLogger(Callback):
    """``{"epochs": trainer.history, **extra}`` written to ``path`` after every epoch.

    Each write is atomic (a temporary file renamed over the old one), and the file is strict
    JSON: NaN and infinities become null. At train end it is written once more with
    ``"status"`` (and ``"reason"`` when there is one) first. ``glassnet train`` writes
    metrics.json with it.
    """

    main_process_only = True

    def __init__(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        extra = {} if extra is None else extra
        if not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
        taken = sorted({"epochs", "status", "reason"} & set(extra))
        if taken:
            raise ValueError(f"extra must not hold the keys {taken}: the logger writes them")
        self.path, self.extra = Path(path), extra
        self._encode({"extra": extra})  # fail now, not after the first epoch

    def _encode(self, document: dict) -> bytes:
        try:
            return json.dumps(strict_json(document), indent=2, allow_nan=False).encode()
        except TypeError as error:
            raise TypeError(f"JSONLogger cannot write {self.path}: {error}") from None

    def _write(self, head: dict) -> None:
        if self.trainer.is_main_process:
            document = head | {"epochs": self.trainer.history} | self.extra
            atomic_write(self.path, self._encode(document))

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self._write({})

    def on_train_end(self, logs: dict | None = None) -> None:
        logs = logs or {}
        head = {"status": logs.get("status")}
        if logs.get("reason"):
            head["reason"] = logs["reason"]
        self._write(head)
