"""``glassnet.fit``: one training loop for any model and any data; behaviour lives in callbacks.

The loop only moves data and calls hooks (Keras's ``on_epoch_begin``, ``on_train_batch_end``,
...). Printing, files, early stopping and schedules are callbacks (:mod:`.callbacks`,
:mod:`.progress`). The step (forward, loss, backward, optimizer) is :meth:`Trainer.train_step`,
with :meth:`Trainer.reduce_gradients` between backward and the update: the one place a
data-parallel trainer changes.

Exactness: every random draw of the loop (shuffles, augmentation) comes from one
``numpy.random.Generator``. A checkpoint (:meth:`Trainer.save_checkpoint`) holds the weights,
the optimizer state, the architecture, the state of that Generator and of every Generator a
module holds (Dropout's), the callbacks' states and, mid-epoch, the epoch's sample order and
position, so a resumed run takes exactly the steps an uninterrupted one would.

Data parallelism (``fit(..., distributed=True)`` under ``mpiexec``, :mod:`glassnet.distributed`):
every rank holds the same state and draws the same order; each takes its slice of every global
batch, and the step's gradients and statistics are summed in :meth:`Trainer.reduce_gradients`.
Only rank 0 prints and writes (callbacks with ``main_process_only``); a checkpoint holds the
global state, so a run resumes on any number of processes.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glassnet.checkpoint import CheckpointError, load_checkpoint, lock_directory, save_checkpoint
from glassnet.data.dataset import Dataset, Subset, as_dataset, split_last
from glassnet.functional.cross_entropy import cross_entropy_forward
from glassnet.model_file import model_metadata
from glassnet.nn import CrossEntropyLoss, Module, no_grad
from glassnet.nn.module import StateDictError, backward_of
from glassnet.optim import Adam, Optimizer

CHECKPOINT = "checkpoint.safetensors"
# What a checkpoint's "run" entry holds, and the JSON type of each part.
_RUN_KEYS = {
    "options": dict,
    "epoch": int,
    "step": int,
    "batch_index": int,
    "running": dict,
    "history": list,
    "optimizer": dict,
    "rng": dict,
    "module_rngs": dict,
    "callbacks": dict,
}


@dataclass
class History:
    """What :func:`fit` returns: one record per epoch, and how the run ended."""

    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"  # "completed", "stopped", "interrupted", "diverged" or "failed"
    reason: str = ""

    def __getitem__(self, key: str) -> list[Any]:
        """Every epoch's value of ``key``, as Keras's ``history.history[key]``."""
        return [record[key] for record in self.history]


class _InterruptFlag:
    """Turns the first Ctrl-C into a flag checked between batches (a second one aborts).

    With ``agree`` (data parallelism) the signal only sets ``requested``; the ranks act on it
    together once the step's allreduce has told every rank (``raised``).
    """

    def __init__(self, agree: bool = False) -> None:
        self.raised = self.requested = False
        self.agree = agree
        self.previous = None

    def __enter__(self) -> _InterruptFlag:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.raised = self.raised or not self.agree

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _is_classification(out: np.ndarray, target: np.ndarray) -> bool:
    return target.dtype.kind in "iu" and out.ndim >= 2 and out.shape[0] == target.shape[0]


def _classified(out: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(correct, counted) over the targets that name a class: one outside [0, C) (an
    ``ignore_index`` such as PyTorch's -100) is neither a hit nor a miss, as in evaluate."""
    counted = (target >= 0) & (target < out.shape[1])
    return int(((out.argmax(axis=1) == target) & counted).sum()), int(counted.sum())


def _loss_parts(loss_fn: Any, out: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The batch's summed loss and what a mean divides it by (the loss's ``denominator``: the
    weight of its counted targets; else the batch's samples), without keeping a gradient
    where that can be avoided. For "sum" and "none" reductions: the sum, and the samples."""
    if type(loss_fn) is CrossEntropyLoss:
        value, cache = cross_entropy_forward(
            out,
            target,
            weight=loss_fn.weight,
            ignore_index=loss_fn.ignore_index,
            reduction="sum",
            label_smoothing=loss_fn.label_smoothing,
            want_grad=False,
        )
        mean = loss_fn.reduction == "mean"
        return float(value), (cache.denominator if mean else float(len(out)))
    value = np.asarray(loss_fn(out, target), dtype=np.float64)
    if getattr(loss_fn, "reduction", "mean") != "mean":
        return float(value.sum()), float(len(out))
    denominator = float(loss_fn.denominator) if "denominator" in dir(loss_fn) else len(out)
    return (float(value) * denominator if denominator else 0.0), float(denominator)


def _mean_of(loss_fn: Any, loss_sum: float, denominator: float) -> float:
    """loss_sum / denominator; nothing counted: NaN (PyTorch's mean) or 0 (all_ignored="zero")."""
    if denominator:
        return loss_sum / denominator
    return 0.0 if getattr(loss_fn, "all_ignored", "nan") == "zero" else math.nan


def _count_classes(confusion: np.ndarray, out: np.ndarray, target: np.ndarray) -> None:
    """Add the batch to the confusion matrix (rows true classes, columns predicted); targets
    outside [0, C) (ignore_index, PyTorch's -100 by default) are not counted."""
    counted = (target >= 0) & (target < out.shape[1])
    np.add.at(confusion, (target[counted], out.argmax(axis=1)[counted]), 1)


class Trainer:
    """The state of one :func:`fit` run and the loop that advances it."""

    is_main_process = True  # False on every rank but 0 of a data-parallel run

    def __init__(
        self,
        model: Module,
        train_set: Dataset,
        val_set: Dataset | None,
        loss_fn: Any,
        optimizer: Optimizer,
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool,
        rng: np.random.Generator,
        callbacks: Sequence[Any],
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None,
        options: dict[str, Any],
        config: dict[str, Any] | None = None,
        parallel: Any = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.parallel = parallel  # a glassnet.distributed.DataParallel, or None
        self.is_main_process = parallel is None or parallel.is_main
        self.train_set, self.val_set = train_set, val_set
        self.epochs, self.batch_size, self.shuffle = epochs, batch_size, shuffle
        self.rng, self.augment, self.options, self.config = rng, augment, options, config
        self.callbacks = list(callbacks)
        self.num_batches = math.ceil(len(train_set) / batch_size)
        self.has_validation = val_set is not None and len(val_set) > 0
        self.epoch = self.step = self.batch_index = 0
        self.order: np.ndarray | None = None  # this epoch's sample order, while it runs
        self.running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "classified": 0}
        self.history: list[dict[str, Any]] = []
        self.stop_training, self.status, self.reason = False, "completed", ""
        self.interrupt = _InterruptFlag(agree=parallel is not None)
        self._rows = (0, 0, 0)  # this rank's slice [lo, hi) of the current global batch of n

    # --- what callbacks call -------------------------------------------------------------

    def stop(self, status: str, reason: str = "") -> None:
        """End the run after the current batch, reporting ``status`` (e.g. "diverged")."""
        self.stop_training, self.status, self.reason = True, status, reason

    def weights_finite(self) -> bool:
        return all(np.isfinite(p.data).all() for p in self.model.parameters())

    # --- the step --------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, tuple[int, int] | None]:
        """Forward, loss, backward, gradient reduction, update: ``(loss, hits)``, where
        ``hits`` is (correct, counted) for classification (targets outside [0, C) are not
        counted) and None otherwise.

        Data-parallel: ``x, y`` are this rank's slice; the result is the global batch's.
        """
        self.model.zero_grad()
        if self.parallel is not None and len(x) == 0:  # fewer samples than ranks: none here
            loss, hits = self.reduce_gradients(0.0, 0.0, (0, 0) if y.dtype.kind in "iu" else None)
            self.optimizer.step()
            return loss, hits
        out = self.model(x)
        # counted before the loss, which may write its gradient into the logits (inplace)
        hits = _classified(out, y) if _is_classification(out, y) else None
        loss = float(self.loss_fn(out, y))
        scale = self._slice_denominator()
        grad_out = self.loss_fn.backward() if scale == 1 else self.loss_fn.backward(scale)
        backward_of(self.model, grad_out, need_input_grad=False)
        loss, hits = self.reduce_gradients(loss, scale, hits)
        self.optimizer.step()
        return loss, hits

    def _mean_loss(self) -> bool:
        return getattr(self.loss_fn, "reduction", "mean") == "mean"

    def _slice_denominator(self) -> float:
        """Data-parallel with a mean loss: what this slice's mean divided its sum by (1
        otherwise). The loss's ``denominator`` where it has one (the weight of the counted
        targets, for ignore_index and class weights), else the slice's samples.

        The step's gradient is then that of the slice's *sum* (``backward(denominator)``), and
        the allreduce adds the sums and the denominators and divides: the mean over the global
        batch, as one process computes it, however the ignored targets and the weights fall
        over the ranks. (Scaling each rank's mean by n_r / B, as DDP's averaging does, is exact
        only when every rank's denominator is in proportion to its samples.) In one process
        there is nothing to add: 1, so that the step is bit for bit fit's without MPI.
        """
        if self.parallel is None or self.parallel.size == 1 or not self._mean_loss():
            return 1.0
        if "denominator" not in dir(self.loss_fn):  # (dir: a property's error is not hidden)
            lo, hi, _ = self._rows
            return float(hi - lo)
        return float(self.loss_fn.denominator)

    def reduce_gradients(
        self, loss: float, denominator: float, hits: tuple[int, int] | None
    ) -> tuple[float, tuple[int, int] | None]:
        """Between backward and the update: data-parallel, one allreduce sums the ranks'
        gradients, loss sums, denominators, (correct, counted) and Ctrl-C requests; returns
        the global batch's loss and (correct, counted) (see :meth:`_slice_denominator`)."""
        if self.parallel is None:
            return loss, hits
        mean = self._mean_loss()
        loss_sum = loss * denominator if mean else loss
        totals = self.parallel.reduce_step(
            self.model.parameters(),
            loss_sum=loss_sum if denominator else 0.0,  # a slice counting nothing adds nothing
            denominator=denominator,
            correct=hits[0] if hits else 0,
            classified=hits[1] if hits else 0,
            stop=self.interrupt.requested,
            step=self.step,
            mean=mean,
        )
        if self._rows[2] < self.parallel.size:  # a rank drew no Dropout mask: rank 0's
            self.parallel.share_generators(self.model)
        self.interrupt.raised = self.interrupt.raised or totals.stop
        hits = None if hits is None else (totals.correct, totals.classified)
        if not mean:
            return totals.loss_sum, hits
        if totals.denominator == 0:  # nothing counted in the whole batch: as one process
            zero = getattr(self.loss_fn, "all_ignored", "nan") == "zero"
            return (0.0 if zero else math.nan), hits
        return totals.loss_sum / totals.denominator, hits

    # --- the loop ---------------------------------------------------------------------------

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            if self.is_main_process or not getattr(callback, "main_process_only", False):
                getattr(callback, hook)(*args)

    def run(self) -> History:
        for callback in self.callbacks:
            callback.set_trainer(self)
        try:
            self._call("on_train_begin", {})
        except BaseException as error:
            self._end_other_ranks(error)
            raise
        try:
            with self.interrupt as interrupt:
                while self.epoch < self.epochs and not self.stop_training:
                    self._run_epoch(interrupt)
                    if interrupt.raised and not self.stop_training:
                        self.stop("interrupted", "Ctrl-C")
        except BaseException as error:  # the callbacks still close the run (bar, metrics)
            self.stop("failed", f"{type(error).__name__}: {error}")
            self._end_other_ranks(error)
            self._call("on_train_end", {"status": self.status, "reason": self.reason})
            raise
        self._call("on_train_end", {"status": self.status, "reason": self.reason})
        return History(self.history, self.status, self.reason)

    def _end_other_ranks(self, error: BaseException) -> None:
        """Data-parallel: the other ranks wait in a collective, so end the job (MPI_Abort)
        with a message naming this rank; the last complete checkpoint stays."""
        if self.parallel is not None and self.parallel.size > 1:
            import traceback

            traceback.print_exception(error)
            self.parallel.fail(f"{type(error).__name__}: {error}")

    def _run_epoch(self, interrupt: _InterruptFlag) -> None:
        if self.order is None:  # a fresh epoch (else: resumed mid-epoch)
            n = len(self.train_set)
            self.order = self.rng.permutation(n) if self.shuffle else np.arange(n)
            self.batch_index = 0
            self.running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "classified": 0}
        self._call("on_epoch_begin", self.epoch, {})
        self.model.train()
        started = time.perf_counter()
        while self.batch_index < self.num_batches:
            self._run_batch()
            if self.stop_training or interrupt.raised:
                return  # mid-epoch: order and position stay for a checkpoint
        record = self._epoch_record(time.perf_counter() - started)
        self.history.append(record)
        self.epoch += 1
        self.order = None
        self._call("on_epoch_end", self.epoch - 1, record)

    def _run_batch(self) -> None:
        start = self.batch_index * self.batch_size
        batch = self.order[start : start + self.batch_size]
        n = len(batch)
        lo, hi = (0, n) if self.parallel is None else self.parallel.shard(n)
        self._rows = (lo, hi, n)
        if self.augment is None:
            x, y = self.train_set[batch[lo:hi]]
        else:  # augmented as a whole, so the random draws are one process's
            x, y = self.train_set[batch]
            x, y = self.augment(x, self.rng)[lo:hi], y[lo:hi]
        if self.parallel is not None:
            self.parallel.set_rows(lo, hi, n)
        self._call("on_train_batch_begin", self.batch_index, {})
        loss, hits = self.train_step(x, y)
        self.step += 1
        self.batch_index += 1
        running = self.running
        running["loss_sum"] += loss * n
        running["seen"] += n
        if hits is not None:
            running["correct"] += hits[0]
            running["classified"] += hits[1]
        self._call("on_train_batch_end", self.batch_index - 1, self._batch_logs(loss, n))

    def _batch_logs(self, loss: float, size: int) -> dict[str, Any]:
        running = self.running
        accuracy = running["correct"] / running["classified"] if running["classified"] else None
        return {
            "loss": loss,
            "size": size,
            "loss_mean": running["loss_sum"] / running["seen"],
            "accuracy_mean": accuracy,
            "seen": running["seen"],
        }

    def _epoch_record(self, seconds: float) -> dict[str, Any]:
        running = self.running
        val = self._validate() if self.has_validation else {}
        return {
            "epoch": self.epoch + 1,
            "train_loss": running["loss_sum"] / max(running["seen"], 1),
            "train_accuracy": (
                running["correct"] / running["classified"] if running["classified"] else None
            ),
            "val_loss": val.get("loss"),
            "val_accuracy": val.get("accuracy"),
            "lr": self.optimizer.lr,
            "epoch_seconds": seconds,  # the training steps (resumed mid-epoch: this process's)
        }

    def _validate(self) -> dict[str, Any]:
        """evaluate() on the validation set; data-parallel, each rank takes a slice and one
        allreduce sums the loss sums, denominators and confusion matrices, so the result is
        one process's."""
        n = len(self.val_set)
        if self.parallel is None or n < self.parallel.size:
            return evaluate(self.model, self.val_set, loss_fn=self.loss_fn)
        lo, hi = self.parallel.shard(n)
        part = Subset(self.val_set, np.arange(lo, hi))
        loss_sum, denominator, confusion = _evaluate_sums(self.model, part, self.loss_fn)
        flat = np.zeros(0) if confusion is None else confusion.ravel().astype(np.float64)
        sums = np.concatenate([[loss_sum, denominator, float(confusion is not None)], flat])
        self.parallel.allreduce(sums, "sum", f"the validation of epoch {self.epoch + 1}")
        total = _evaluate_result(self.loss_fn, sums[0], sums[1], n)
        if sums[2]:
            classes = round(np.sqrt(len(flat)))
            total |= _class_metrics(sums[3:].reshape(classes, classes).round().astype(np.int64))
        return {"loss": total["loss"], "accuracy": total.get("accuracy")}

    # --- checkpoints --------------------------------------------------------------------------

    def _module_generators(self) -> dict[str, np.random.Generator]:
        return {
            path: module.rng
            for path, module in self.model.named_modules()
            if isinstance(getattr(module, "rng", None), np.random.Generator)
        }

    def _callback_keys(self) -> list[str]:
        """Each callback's name among a checkpoint's states: its ``state_key`` (by default its
        class name), with "#2", "#3" for a second and third of one name. A state then finds its
        callback when a resumed run adds, drops or reorders others (Lightning's state_key)."""
        keys, seen = [], Counter()
        for callback in self.callbacks:
            name = str(getattr(callback, "state_key", None) or type(callback).__name__)
            seen[name] += 1
            keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return keys

    def save_checkpoint(self, path: str | Path) -> None:
        """Write everything a resumed run needs to ``path``, atomically."""
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_state = self.optimizer.state_dict()
        arrays |= {f"optim.{k}": v for k, v in optim_state.items() if isinstance(v, np.ndarray)}
        if self.order is not None:
            arrays["epoch_order"] = self.order
        sample_shape = getattr(self.train_set, "sample_shape", None)
        classes = getattr(self.train_set, "classes", None)
        with nullcontext() if self.parallel is None else self.parallel.plain_model(self.model):
            metadata = model_metadata(self.model, sample_shape, classes)
        metadata |= {
            "run": {
                "config": self.config,
                "options": self.options,
                "epoch": self.epoch,
                "step": self.step,
                "batch_index": self.batch_index,
                "running": self.running,
                "history": self.history,
                "optimizer": {"lr": self.optimizer.lr, "step": self.optimizer.step_count},
                "rng": self.rng.bit_generator.state,
                "module_rngs": {
                    p: g.bit_generator.state for p, g in self._module_generators().items()
                },
                "callbacks": {
                    key: callback.state_dict()
                    for key, callback in zip(self._callback_keys(), self.callbacks, strict=True)
                },
            }
        }
        save_checkpoint(path, arrays, metadata)

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue the run saved in ``path`` (see :meth:`save_checkpoint`)."""
        arrays, metadata = load_checkpoint(path)
        run = metadata.get("run")
        if not isinstance(run, dict):
            raise CheckpointError(f"{path} is not a checkpoint of a glassnet.fit run")
        problems = [
            f"{key} ({'missing' if key not in run else type(run[key]).__name__})"
            for key, kind in _RUN_KEYS.items()
            if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool)
        ]
        if problems:
            raise CheckpointError(f"{path} cannot be resumed: bad or missing {', '.join(problems)}")
        self._check_options(run["options"], path)
        try:
            self._restore(arrays, run)
        except (KeyError, TypeError, ValueError, StateDictError) as error:
            raise CheckpointError(f"{path} cannot be resumed: {error}") from None
        if self.epochs <= self.epoch:
            raise ValueError(
                f"epochs={self.epochs}: the run has completed {self.epoch} epochs; pass a "
                "larger number to train it further"
            )

    def _check_options(self, saved: Any, path: str | Path) -> None:
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: its run options are missing")
        differ = [
            f"{key}={self.options.get(key)!r} (the run used {value!r})"
            for key, value in saved.items()
            if key != "epochs" and self.options.get(key) != value
        ]
        if differ:
            raise ValueError(
                f"resuming {path} with other options than its run: {'; '.join(differ)}"
            )

    def _restore(self, arrays: dict[str, np.ndarray], run: dict[str, Any]) -> None:
        self.model.load_state_dict(
            {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}
        )
        optim = {k.removeprefix("optim."): v for k, v in arrays.items() if k.startswith("optim.")}
        self.optimizer.load_state_dict(optim | run["optimizer"])
        self.rng.bit_generator.state = run["rng"]
        generators = self._module_generators()
        for path, state in run["module_rngs"].items():
            if path in generators:
                generators[path].bit_generator.state = state
        saved, keys, taken = run["callbacks"], self._callback_keys(), set()
        for i, (key, callback) in enumerate(zip(keys, self.callbacks, strict=True)):
            legacy = f"{i}.{type(callback).__name__}"  # checkpoints keyed by position
            key = key if key in saved or legacy not in saved else legacy
            if key in saved:
                callback.load_state_dict(saved[key])
                taken.add(key)
        dropped = [repr(key) for key, state in saved.items() if state and key not in taken]
        if dropped:
            warnings.warn(
                f"no callback of this run takes the saved state of {', '.join(dropped)}: "
                "it starts afresh",
                stacklevel=5,  # at fit(...) (via load_checkpoint, _start_or_resume)
            )
        self.epoch, self.step = int(run["epoch"]), int(run["step"])
        self.batch_index, self.running = int(run["batch_index"]), dict(run["running"])
        self.history = list(run["history"])
        order = arrays.get("epoch_order")
        if order is not None and (order.ndim != 1 or len(order) != len(self.train_set)):
            raise ValueError(
                f"its epoch order has shape {order.shape}, the data {len(self.train_set)}"
            )
        self.order = order


def fit(
    model: Module,
    train_data: Any,
    *,
    loss_fn: Any = None,
    optimizer: Optimizer | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    val_data: Any = None,
    val_fraction: float = 0.0,
    shuffle: bool = True,
    seed: int = 0,
    callbacks: Iterable[Any] = (),
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    config: dict[str, Any] | None = None,
    verbose: int = 1,
    distributed: Any = False,
) -> History:
    """Train ``model`` on ``train_data``; returns the :class:`History`, as Keras's ``fit``.

    Args:
        train_data, val_data: ``(x, y)`` arrays or a glassnet.data dataset.
        loss_fn: default ``CrossEntropyLoss(reuse_gradient=True)`` (the loop keeps no
            gradient, so each step's may go into the last one's buffer); any loss with
            ``loss_fn(out, y)`` and ``backward()`` (``MSELoss()`` for regression: no accuracy).
        optimizer: default ``Adam(model.parameters(), lr=1e-3)``.
        val_fraction: the last fraction of ``train_data`` validates instead (Keras's split).
        seed: seeds the Generator of every random draw the loop makes (order, augmentation).
        callbacks: see :mod:`glassnet.train.callbacks`; ``verbose=1`` adds a ProgressBar.
        out_dir: a run directory: locked while fit runs, a resumable checkpoint after every
            epoch (and on Ctrl-C), metrics.json and history.csv. ``resume=True`` continues the
            run it holds; without it a directory holding a run is refused unless ``overwrite``.
        augment: ``augment(x, rng) -> x`` applied to each training batch (see glassnet.data).
        config: a JSON-able description of the run (hyperparameters), kept in its checkpoints
            and metrics.json.
        distributed: True or a ``glassnet.distributed.DataParallel`` (its options): train on
            all the processes ``mpiexec`` started, each a slice of every batch of
            ``batch_size`` (the global batch); rank 0 prints and writes. Without mpiexec: one
            process, as distributed=False. See docs/distributed.md.
    """
    _check_fit_arguments(model, epochs, batch_size, verbose)
    train_set = as_dataset(train_data, "train_data")
    if val_data is not None and val_fraction:
        raise ValueError("give val_data or val_fraction, not both")
    val_set = None if val_data is None else as_dataset(val_data, "val_data")
    if val_fraction:
        train_set, val_set = split_last(train_set, val_fraction)
    if len(train_set) == 0:
        raise ValueError("train_data holds no samples")
    options = {
        "batch_size": batch_size,
        "shuffle": bool(shuffle),
        "seed": seed,
        "val_fraction": val_fraction,
        "train_size": len(train_set),
    }
    callbacks = list(callbacks)
    out_dir = None if out_dir is None else Path(out_dir)
    parallel = _data_parallel(distributed)
    main = parallel is None or parallel.is_main
    if parallel is not None and parallel.sync_batchnorm:
        smallest = min(batch_size, len(train_set) % batch_size or batch_size)
        if smallest < parallel.size:  # an idle rank would miss SyncBatchNorm's allreduces
            raise ValueError(
                f"SyncBatchNorm over {parallel.size} processes needs every batch to hold at "
                f"least {parallel.size} samples; with batch_size={batch_size} and "
                f"{len(train_set)} training samples one holds {smallest}"
            )
    with nullcontext() if out_dir is None or not main else lock_directory(out_dir):
        extra = _default_callbacks(callbacks, out_dir, verbose, config)
        for callback in extra:  # printing and files, and whatever is added there later
            callback.main_process_only = True
        callbacks += extra
        trainer = Trainer(
            model,
            train_set,
            val_set,
            CrossEntropyLoss(reuse_gradient=True) if loss_fn is None else loss_fn,
            Adam(model.parameters(), lr=1e-3) if optimizer is None else optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            rng=np.random.default_rng(seed),
            callbacks=callbacks,
            augment=augment,
            options=options,
            config=config,
            parallel=parallel,
        )
        _start_or_resume(trainer, out_dir, resume, overwrite, main)
        if parallel is None:
            return trainer.run()
        _share_state(trainer, parallel)
        with parallel.running(model):
            return trainer.run()


def _data_parallel(distributed: Any) -> Any:
    """The DataParallel that ``fit(distributed=...)`` asks for, or None."""
    if distributed is False or distributed is None:
        return None
    from glassnet.distributed import DataParallel

    if distributed is True:
        return DataParallel()
    if not isinstance(distributed, DataParallel):
        raise TypeError(
            f"distributed must be True, False or a glassnet.distributed.DataParallel, "
            f"got {type(distributed).__name__}"
        )
    return distributed


def _share_state(trainer: Trainer, parallel: Any) -> None:
    """Rank 0's weights, buffers and random generators on every rank (a model built without
    a seed differs between processes; a resumed one does not, but costs one broadcast)."""
    parallel.broadcast_model(trainer.model)
    generators = trainer._module_generators()
    states = parallel.broadcast_object(
        {
            "rng": trainer.rng.bit_generator.state,
            "modules": {path: g.bit_generator.state for path, g in generators.items()},
        },
        "the random generators' broadcast",
    )
    trainer.rng.bit_generator.state = states["rng"]
    for path, state in states["modules"].items():
        generators[path].bit_generator.state = state


def _check_fit_arguments(model: Any, epochs: Any, batch_size: Any, verbose: Any) -> None:
    if not isinstance(model, Module):
        raise TypeError(f"model must be a glassnet Module, got {type(model).__name__}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if verbose not in (0, 1):
        raise ValueError(f"verbose={verbose!r} must be 0 (silent) or 1 (progress bar)")


def _default_callbacks(
    given: list[Any], out_dir: Path | None, verbose: int, config: dict[str, Any] | None
) -> list[Any]:
    """A progress bar (verbose=1) and, with an out_dir, checkpoints and metric files."""
    from glassnet.train.callbacks import CSVLogger, JSONLogger, ModelCheckpoint
    from glassnet.train.progress import ProgressBar

    def has(kind):
        return any(isinstance(callback, kind) for callback in given)

    extra: list[Any] = []
    if verbose and not has(ProgressBar):
        extra.append(ProgressBar())
    if out_dir is not None:
        if not any(isinstance(c, ModelCheckpoint) and c.save == "last" for c in given):
            extra.append(ModelCheckpoint(out_dir, save="last"))
        if not has(JSONLogger):
            extra.append(JSONLogger(out_dir / "metrics.json", extra={"config": config}))
        if not has(CSVLogger):
            extra.append(CSVLogger(out_dir / "history.csv", append=True))
    return extra


def _start_or_resume(
    trainer: Trainer, out_dir: Path | None, resume: bool, overwrite: bool, main: bool = True
) -> None:
    checkpoint = None if out_dir is None else out_dir / CHECKPOINT
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise FileNotFoundError(
                f"nothing to resume: {checkpoint or 'no out_dir'} does not exist"
            )
        trainer.load_checkpoint(checkpoint)
    elif checkpoint is not None and checkpoint.exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} holds a run already: resume it (resume=True, glassnet train --resume) "
            "or start over (overwrite=True, --overwrite)"
        )
    elif checkpoint is not None and overwrite and main:
        for name in (CHECKPOINT, "metrics.json", "history.csv"):
            (out_dir / name).unlink(missing_ok=True)


def evaluate(
    model: Module, data: Any, *, loss_fn: Any = None, batch_size: int = 1000
) -> dict[str, Any]:
    """Loss (and for classification accuracy, per-class accuracy, confusion matrix) in eval
    mode under ``no_grad``; rows of the confusion matrix are true classes, columns predicted.

    A mean loss is the whole set's: its summed loss over the summed denominators of the
    batches (with class weights or ignore_index, not the mean of the batches' means); other
    reductions give the summed loss per sample. Targets outside [0, C) (ignore_index) are
    left out of the accuracies and the confusion matrix."""
    dataset = as_dataset(data, "data")
    loss_fn = CrossEntropyLoss() if loss_fn is None else loss_fn
    loss_sum, denominator, confusion = _evaluate_sums(model, dataset, loss_fn, batch_size)
    result = _evaluate_result(loss_fn, loss_sum, denominator, len(dataset))
    if confusion is not None:
        result |= _class_metrics(confusion)
    return result


def _evaluate_sums(
    model: Module, dataset: Dataset, loss_fn: Any, batch_size: int = 1000
) -> tuple[float, float, np.ndarray | None]:
    """(summed loss, summed denominators, confusion matrix or None) over ``dataset``."""
    was_training = model.training
    model.eval()
    loss_sum, denominator, confusion = 0.0, 0.0, None
    try:
        with no_grad():
            for start in range(0, len(dataset), batch_size):
                x, y = dataset[np.arange(start, min(start + batch_size, len(dataset)))]
                out = model(x)
                if _is_classification(out, y):
                    if confusion is None:
                        confusion = np.zeros((out.shape[1], out.shape[1]), dtype=np.int64)
                    _count_classes(confusion, out, y)
                batch_sum, batch_denominator = _loss_parts(loss_fn, out, y)
                loss_sum, denominator = loss_sum + batch_sum, denominator + batch_denominator
    finally:
        model.train(was_training)
    return loss_sum, denominator, confusion


def _evaluate_result(loss_fn: Any, loss_sum: float, denominator: float, n: int) -> dict:
    if getattr(loss_fn, "reduction", "mean") == "mean":
        return {"loss": _mean_of(loss_fn, loss_sum, denominator)}
    return {"loss": loss_sum / max(n, 1)}


def _class_metrics(confusion: np.ndarray) -> dict[str, Any]:
    counted = max(int(confusion.sum()), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "accuracy": float(confusion.trace() / counted),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def predict(model: Module, x: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
    """The model's outputs for ``x`` (N, ...) in eval mode under ``no_grad``, in batches."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            outputs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0,))
