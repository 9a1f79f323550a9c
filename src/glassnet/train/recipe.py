"""The training loop: the seeds' convnet, Adam, minibatches, validation, checkpoints, metrics.

``train(config)`` is what ``glassnet train`` runs. Everything random (initial weights, shuffling,
dropout) draws from one ``numpy.random.Generator`` seeded by ``config.seed``; its state goes
into every checkpoint together with the weights, the optimizer state and, mid-epoch, the
epoch's sample order, so a resumed run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from glassnet.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    lock_directory,
    save_checkpoint,
)
from glassnet.data import DATASETS, batches, load, validation_split
from glassnet.functional import cross_entropy
from glassnet.memory import keep_freed_memory
from glassnet.model_file import model_metadata
from glassnet.nn import CrossEntropyLoss, Module, Sequential, convnet, no_grad
from glassnet.optim import OPTIMIZERS, CosineAnnealingLR, LRScheduler, Optimizer, StepLR

CHECKPOINT = "checkpoint.safetensors"
SCHEDULES = ("none", "step", "cosine")


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoints and metrics."""

    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "none"
    seed: int = 0
    val_fraction: float = 0.1
    dropout: float = 0.5
    init: str = "pytorch"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} must be one of {sorted(DATASETS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} must be one of {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} must be one of {SCHEDULES}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in [0, 1)")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint must hold besides weights and optimizer state."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)
    # Mid-epoch only (after Ctrl-C): the epoch's sample order and how far it got.
    order: np.ndarray | None = None
    batch_index: int = 0
    running: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "correct": 0, "seen": 0}
    )


@dataclass
class Run:
    """A model with its optimizer, schedule, Generator and state: one training run."""

    config: TrainConfig
    model: Sequential
    optimizer: Optimizer
    scheduler: LRScheduler | None
    rng: np.random.Generator
    state: TrainState


def build_run(config: TrainConfig, num_classes: int = 10) -> Run:
    rng = np.random.default_rng(config.seed)
    model = convnet(num_classes, dropout=config.dropout, init=config.init, rng=rng)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)
    scheduler = None
    if config.schedule == "step":
        scheduler = StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    elif config.schedule == "cosine":
        scheduler = CosineAnnealingLR(optimizer, T_max=config.epochs)
    return Run(config, model, optimizer, scheduler, rng, TrainState())


def save_run(run: Run, path: Path) -> None:
    arrays = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    optim_state = run.optimizer.state_dict()
    arrays |= {f"optim.{k}": v for k, v in optim_state.items() if isinstance(v, np.ndarray)}
    if run.state.order is not None:
        arrays["epoch_order"] = run.state.order
    classes = DATASETS[run.config.dataset].classes
    metadata = model_metadata(run.model, (1, 28, 28), list(classes)) | {
        "config": asdict(run.config),
        "epoch": run.state.epoch,
        "step": run.state.step,
        "history": run.state.history,
        "batch_index": run.state.batch_index,
        "running": run.state.running,
        "optimizer": {"lr": run.optimizer.lr, "step": run.optimizer.step_count},
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "rng": run.rng.bit_generator.state,
    }
    save_checkpoint(path, arrays, metadata)


# What a training checkpoint's metadata must hold, and the JSON type of each entry.
RUN_METADATA = {
    "config": dict,
    "epoch": int,
    "step": int,
    "history": list,
    "batch_index": int,
    "running": dict,
    "optimizer": dict,
    "scheduler": (dict, type(None)),
    "rng": dict,
}


def restore_run(path: Path) -> Run:
    """Rebuild a run from its checkpoint: same config, weights, optimizer, RNG and position.

    Raises:
        CheckpointError: the file is not a training checkpoint this glassnet can continue
            (missing or mistyped metadata, weights or optimizer state that do not fit).
    """
    arrays, meta = load_checkpoint(path)
    problems = [
        f"{key} ({'missing' if key not in meta else type(meta[key]).__name__})"
        for key, kind in RUN_METADATA.items()
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)
    ]
    if problems:
        raise CheckpointError(
            f"{path} is not a training checkpoint glassnet can resume: bad or missing "
            f"metadata {', '.join(problems)}"
        )
    try:
        return _restore(arrays, meta)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be resumed: {error}") from None


def _restore(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Run:
    unknown = set(meta["config"]) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    run = build_run(TrainConfig(**meta["config"]))
    run.model.load_state_dict(
        {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}
    )
    optim_state = {k.removeprefix("optim."): v for k, v in arrays.items() if k.startswith("optim.")}
    run.optimizer.load_state_dict(optim_state | meta["optimizer"])
    if run.scheduler is not None and meta["scheduler"] is not None:
        run.scheduler.load_state_dict(meta["scheduler"])
    run.rng.bit_generator.state = meta["rng"]  # the same Generator the dropout layer holds
    order = arrays.get("epoch_order")
    if order is not None and (order.ndim != 1 or order.dtype.kind not in "iu"):
        raise ValueError(
            f"epoch_order must be a 1-D integer array, got {order.dtype} {order.shape}"
        )
    run.state = TrainState(
        epoch=meta["epoch"],
        step=meta["step"],
        history=meta["history"],
        order=order,
        batch_index=meta["batch_index"],
        running=meta["running"],
    )
    return run


def evaluate(
    model: Module, x: np.ndarray, y: np.ndarray, num_classes: int = 10, batch_size: int = 1000
) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) in eval mode,
    under ``no_grad`` (no layer keeps a cache)."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    try:
        with no_grad():
            for xb, yb in batches(x, y, batch_size):
                logits = model(xb)
                total_loss += float(cross_entropy(logits, yb, reduction="sum"))
                np.add.at(confusion, (yb, logits.argmax(axis=1)), 1)
    finally:
        model.train(was_training)
    n = max(len(y), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "loss": total_loss / n,
        "accuracy": float(confusion.trace() / n),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


class ProgressBar:
    """One line per epoch, redrawn in place: progress, loss, accuracy, throughput and ETA."""

    def __init__(self, total: int, label: str, stream: TextIO, enabled: bool) -> None:
        self.total, self.label, self.stream, self.enabled = total, label, stream, enabled
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def update(self, done: int, loss: float, accuracy: float, images: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last_draw < 0.1 and done < self.total):
            return
        self.last_draw = now
        elapsed = now - self.start
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - done) if done else 0.0
        filled = int(24 * done / self.total)
        bar = "=" * filled + (">" if filled < 24 else "") + " " * (23 - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total}  loss {loss:.4f}  acc {accuracy:.4f}  "
            f"{rate:,.0f} img/s  ETA {_clock(eta)} "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class _InterruptFlag:
    """Turns the first Ctrl-C into a flag checked between batches (a second one aborts)."""

    def __init__(self) -> None:
        self.raised = False
        self.previous = None

    def __enter__(self) -> _InterruptFlag:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(
    config: TrainConfig | None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    quiet: bool = False,
    plots: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    on_batch_end: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train the seeds' convnet as ``config`` says; return the metrics (also in metrics.json).

    Args:
        config: the recipe (dataset, epochs, batch size, optimizer, lr, seed, ...); ignored
            when resuming, which continues with the checkpoint's.
        out_dir: receives checkpoint.safetensors (after every epoch, and on Ctrl-C),
            metrics.json, curves.png and confusion.png. None: nothing is written.
        resume: continue from ``out_dir``'s checkpoint.
        epochs: when resuming, train up to this many epochs instead of the checkpoint's.
        data_dir: where to look for the dataset first (see glassnet.data).
        data: (x_train, y_train, x_test, y_test) to use instead of loading the dataset.
        quiet: print only the per-epoch summary lines.
        on_batch_end: called with (global step, batch loss) after every optimizer step.
    Returns:
        The metrics dict, with "status" "completed" or "interrupted".
    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    out_dir = None if out_dir is None else Path(out_dir)
    with nullcontext() if out_dir is None else lock_directory(out_dir):
        return _train(
            config,
            out_dir,
            resume,
            epochs,
            data_dir,
            data,
            quiet,
            plots,
            stdout,
            stderr,
            on_batch_end,
        )


def _train(
    config, out_dir, resume, epochs, data_dir, data, quiet, plots, stdout, stderr, on_batch_end
) -> dict[str, Any]:
    """:func:`train`'s body, run while holding ``out_dir``'s lock."""
    keep_freed_memory()  # every step frees and re-allocates the same large buffers
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    checkpoint_path = None if out_dir is None else out_dir / CHECKPOINT
    if resume:
        if checkpoint_path is None or not checkpoint_path.exists():
            raise FileNotFoundError(f"nothing to resume: {checkpoint_path} does not exist")
        run = restore_run(checkpoint_path)
        if epochs is not None:
            if not isinstance(epochs, int) or epochs <= run.state.epoch:
                raise ValueError(
                    f"epochs={epochs!r}: the run has completed {run.state.epoch} epochs; "
                    f"pass a larger number to train it further"
                )
            run.config.epochs = epochs
        config = run.config
        print(
            f"Resuming from {checkpoint_path} at epoch {run.state.epoch}, step {run.state.step}",
            file=stdout,
        )
    elif config is None:
        raise ValueError("train() needs a config unless resume=True")
    else:
        run = build_run(config)
    if data is None:
        x_train, y_train = load(config.dataset, "train", data_dir)
        x_test, y_test = load(config.dataset, "test", data_dir)
    else:
        x_train, y_train, x_test, y_test = data
    (x_train, y_train), (x_val, y_val) = validation_split(x_train, y_train, config.val_fraction)
    classes = DATASETS[config.dataset].classes
    loss_fn = CrossEntropyLoss(reuse_gradient=True)  # the loop keeps no gradient it was lent
    model, state = run.model, run.state
    num_batches = math.ceil(len(x_train) / config.batch_size)
    show_bar = not quiet and stderr.isatty()
    status = "completed"
    with _InterruptFlag() as interrupt:
        while state.epoch < config.epochs and not interrupt.raised:
            if state.order is None:
                state.order = run.rng.permutation(len(x_train))
                state.batch_index = 0
                state.running = {"loss": 0.0, "correct": 0, "seen": 0}
            label = f"Epoch {state.epoch + 1}/{config.epochs}"
            bar = ProgressBar(num_batches, label, stderr, show_bar)
            started = time.perf_counter()
            model.train()
            running = state.running
            done = state.batch_index * config.batch_size  # > 0 when resuming mid-epoch
            for xb, yb in batches(x_train, y_train, config.batch_size, state.order[done:]):
                model.zero_grad()
                logits = model(xb)
                loss = float(loss_fn(logits, yb))
                if not math.isfinite(loss):
                    bar.close()
                    raise NonFiniteLossError(
                        f"loss became {loss} at epoch {state.epoch + 1}, step {state.step + 1} "
                        f"(lr={run.optimizer.lr:g}); the last good checkpoint "
                        f"({checkpoint_path or 'none: no --out'}) was kept. "
                        "Try a smaller --lr."
                    )
                # The loss hands back p - y; no softmax backward ever runs.
                model.backward(loss_fn.backward(), need_input_grad=False)
                run.optimizer.step()
                state.step += 1
                state.batch_index += 1
                running["loss"] += loss * len(yb)
                running["correct"] += int((logits.argmax(axis=1) == yb).sum())
                running["seen"] += len(yb)
                seen = running["seen"]
                bar.update(
                    state.batch_index, running["loss"] / seen, running["correct"] / seen, seen
                )
                if on_batch_end is not None:
                    on_batch_end(state.step, loss)
                if interrupt.raised:
                    break
            bar.close()
            if interrupt.raised and state.batch_index < num_batches:
                break  # mid-epoch: the checkpoint below keeps the order and position
            train_seconds = time.perf_counter() - started
            val = evaluate(model, x_val, y_val, len(classes)) if len(x_val) else None
            record = {
                "epoch": state.epoch + 1,
                "train_loss": running["loss"] / running["seen"],
                "train_accuracy": running["correct"] / running["seen"],
                "val_loss": val["loss"] if val else None,  # JSON has no NaN
                "val_accuracy": val["accuracy"] if val else None,
                "epoch_seconds": train_seconds,  # the training steps (resumed: this session's)
                "val_seconds": time.perf_counter() - started - train_seconds,
                "lr": run.optimizer.lr,
            }
            state.history.append(record)
            state.epoch += 1
            state.order = None
            if run.scheduler is not None:
                run.scheduler.step()
            if checkpoint_path is not None:
                save_run(run, checkpoint_path)
            print(_summary_line(record, config.epochs), file=stdout, flush=True)
        if interrupt.raised and state.epoch < config.epochs:
            status = "interrupted"
            if checkpoint_path is not None:
                save_run(run, checkpoint_path)
            print(
                f"Interrupted at epoch {state.epoch + 1}, step {state.step}; saved "
                f"{checkpoint_path or 'nothing (no --out)'}. Continue with --resume.",
                file=stdout,
            )

    metrics: dict[str, Any] = {"status": status, "config": asdict(config), "epochs": state.history}
    if status == "completed":
        test = evaluate(model, x_test, y_test, len(classes))
        metrics |= {f"test_{k}": v for k, v in test.items()}
        print(f"Test: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}", file=stdout)
    if out_dir is not None:
        atomic_write(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
        if plots and status == "completed":
            from glassnet.plots import plot_confusion, plot_curves

            plot_curves(state.history, out_dir / "curves.png")
            plot_confusion(
                np.array(metrics["test_confusion_matrix"]), classes, out_dir / "confusion.png"
            )
    return metrics


def _summary_line(record: dict[str, float], epochs: int) -> str:
    val = "no validation"
    if record["val_loss"] is not None:
        val = f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    return (
        f"Epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f} | {val} | {record['epoch_seconds']:.1f}s "
        f"(+{record['val_seconds']:.1f}s validation)"
    )
