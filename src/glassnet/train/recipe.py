"""The recipe ``glassnet train`` runs: data, model, optimizer and callbacks, handed to ``fit``.

``train(TrainConfig(...), out_dir)`` is the command line in Python. Everything that defines a
run is its :class:`TrainConfig`; it is stored in the run's checkpoint and metrics.json, and
``--resume`` continues the run with it (options that contradict it are refused). The loop,
exact resume, checkpoints and progress are :func:`glassnet.fit`'s.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from glassnet.checkpoint import CheckpointError, atomic_write, load_checkpoint, lock_directory
from glassnet.data.dataset import ArrayDataset, Dataset
from glassnet.data.datasets import DATASETS, load
from glassnet.model_file import build, read_model_file
from glassnet.nn import CrossEntropyLoss, Flatten, Linear, Module, ReLU, Sequential, convnet
from glassnet.nn.layers import Dropout
from glassnet.optim import OPTIMIZERS, CosineAnnealingLR, StepLR
from glassnet.train import callbacks as cb
from glassnet.train.loop import CHECKPOINT, evaluate, fit
from glassnet.train.progress import ProgressBar

SCHEDULES = ("none", "step", "cosine")
MODELS = ("convnet", "mlp")  # or a path to a JSON architecture
AUGMENTATIONS = ("none", "shift", "shift+flip")


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoints and metrics."""

    dataset: str | None = "mnist"  # a built-in dataset, or None when ``data`` is given
    data: str | None = None  # an ImageFolder root (train/, test/), a .npz or an IDX folder
    model: str = "convnet"  # "convnet", "mlp", or a JSON architecture file (a model file's)
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "none"
    seed: int = 0
    val_fraction: float = 0.1
    dropout: float = 0.5
    init: str = "pytorch"
    augment: str = "none"

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.data is None):
            raise ValueError("give either dataset (a built-in name) or data (a path), not both")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} must be one of {sorted(DATASETS)}")
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"data={self.data!r} does not exist")
        if self.model not in MODELS and not Path(self.model).is_file():
            raise ValueError(f"model={self.model!r} must be one of {MODELS} or a JSON file")
        for name, allowed in (
            ("optimizer", tuple(OPTIMIZERS)),
            ("schedule", SCHEDULES),
            ("augment", AUGMENTATIONS),
            ("init", ("pytorch", "glorot")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {allowed}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in [0, 1)")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout <= 1):
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1]")

    @classmethod
    def from_dict(cls, values: Any) -> TrainConfig:
        """A config from a checkpoint's JSON: unknown or mistyped entries are clear errors."""
        if not isinstance(values, dict):
            raise ValueError(f"a training config must be an object, got {type(values).__name__}")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}")
        return cls(**values)


def open_run_data(
    config: TrainConfig, data_dir: str | Path | None = None, arrays: tuple | None = None
) -> tuple[Dataset, Dataset | None, list[str]]:
    """The run's (train, test, class names): a built-in dataset, or ``config.data``, or
    ``arrays`` = (x_train, y_train, x_test, y_test) standing in for the config's dataset."""
    if arrays is not None:
        classes = list(DATASETS[config.dataset].classes) if config.dataset else None
        train_set, test_set = ArrayDataset(*arrays[:2]), ArrayDataset(*arrays[2:])
        classes = classes or [str(i) for i in range(int(train_set.y.max()) + 1)]
        train_set.classes = test_set.classes = classes
        return train_set, test_set, classes
    if config.data is not None:
        from glassnet.data.sources import open_data

        train_set, test_set, _ = open_data(config.data)
        return train_set, test_set, list(train_set.classes)
    classes = list(DATASETS[config.dataset].classes)
    sets = []
    for split in ("train", "test"):
        dataset = ArrayDataset(*load(config.dataset, split, data_dir))
        dataset.classes = classes
        sets.append(dataset)
    return sets[0], sets[1], classes


def build_model(config: TrainConfig, sample_shape: tuple[int, ...], num_classes: int) -> Module:
    """The config's model for samples of ``sample_shape`` (C, H, W) and ``num_classes``."""
    rng = np.random.default_rng(config.seed)  # the initial weights; fit's Generator is its own
    if config.model == "convnet":
        channels, height, width = sample_shape
        if height != width:
            raise ValueError(f"the convnet needs square images, the data's are {height}x{width}")
        return convnet(num_classes, channels, height, config.dropout, init=config.init, rng=rng)
    if config.model == "mlp":
        options = {"init": config.init, "rng": rng}
        return Sequential(
            Flatten(),
            Linear(int(np.prod(sample_shape)), 256, **options),
            ReLU(),
            Dropout(config.dropout, rng=rng),
            Linear(256, num_classes, **options),
        )
    try:
        spec = json.loads(Path(config.model).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"model={config.model!r} is not a readable JSON file: {error}") from None
    spec = spec.get("architecture", spec) if isinstance(spec, dict) else spec
    return build(spec, config.model, rng=rng)  # seeded: --seed gives the same initial weights


def _callbacks(config: TrainConfig, optimizer, quiet: bool, stdout, stderr) -> list[Any]:
    callbacks: list[Any] = [
        ProgressBar(stderr, live=None if not quiet else False, summary_stream=stdout),
        cb.TerminateOnNaN(),
    ]
    if config.schedule == "step":
        callbacks.append(cb.LRScheduler(StepLR(optimizer, max(1, config.epochs // 3), 0.1)))
    elif config.schedule == "cosine":
        callbacks.append(cb.LRScheduler(CosineAnnealingLR(optimizer, T_max=config.epochs)))
    return callbacks


def _augmentation(name: str):
    if name == "none":
        return None
    from glassnet.data.augment import Compose, RandomFlip, RandomShift

    return RandomShift(2) if name == "shift" else Compose(RandomShift(2), RandomFlip())


def read_run_config(out_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of the run whose checkpoint is in ``out_dir``."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    _, metadata = load_checkpoint(path)
    run = metadata.get("run")
    config = run.get("config") if isinstance(run, dict) else None
    try:
        return TrainConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds no usable training config: {error}") from None


def train(
    config: TrainConfig | None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[Any] = (),
    quiet: bool = False,
    plots: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    distributed: bool = False,
    sync_batchnorm: bool = False,
) -> dict[str, Any]:
    """Train as ``config`` says; return the metrics (also written to ``out_dir/metrics.json``).

    Args:
        config: the recipe; with ``resume`` None means the checkpoint's (a given config must
            equal it but for ``epochs``).
        out_dir: receives checkpoint.safetensors (every epoch, and on Ctrl-C), metrics.json,
            history.csv, curves.png and confusion.png. None: nothing is written.
        epochs: when resuming, train up to this many epochs (more than the run has done).
        data_dir: where to look first for a built-in dataset's files.
        data: (x_train, y_train, x_test, y_test) arrays to use instead of loading the data.
        callbacks: more callbacks for fit, after the recipe's own.
        distributed: data-parallel over the processes of ``mpiexec`` (``fit``'s); only rank
            0 prints, writes ``out_dir`` and evaluates the test set. ``sync_batchnorm``:
            BatchNorm statistics over the global batch (see glassnet.distributed).
    Returns:
        The metrics: "status" ("completed", "stopped", "interrupted" or "diverged"),
        "config", "epochs" (per-epoch records) and, when completed, the test results.
    """
    parallel = None
    if distributed:
        from glassnet.distributed import DataParallel

        parallel = DataParallel(sync_batchnorm=sync_batchnorm)
    main = parallel is None or parallel.is_main
    lock = nullcontext() if out_dir is None or not main else lock_directory(out_dir)
    with lock, nullcontext() if main else open(os.devnull, "w") as devnull:
        # the lock comes before anything is read: a second run on out_dir stops at once
        stdout = devnull if not main else sys.stdout if stdout is None else stdout
        stderr = devnull if not main else sys.stderr if stderr is None else stderr
        if parallel is not None and parallel.size > 1:
            print(parallel.describe(), file=stdout, flush=True)
        model = None
        if resume:
            if out_dir is None:
                raise ValueError("resume=True needs the out_dir of the run to continue")
            saved = read_run_config(out_dir)
            _check_same(config, saved)
            config = (
                saved if epochs is None else TrainConfig(**(asdict(saved) | {"epochs": epochs}))
            )
            model = read_model_file(Path(out_dir) / CHECKPOINT).model
            print(f"Resuming from {Path(out_dir) / CHECKPOINT}", file=stdout)
        elif config is None:
            raise ValueError("train() needs a config unless resume=True")
        train_set, test_set, classes = open_run_data(config, data_dir, data)
        if model is None:
            model = build_model(config, tuple(train_set[np.arange(1)][0].shape[1:]), len(classes))
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)
        history = fit(
            model,
            train_set,
            loss_fn=CrossEntropyLoss(reuse_gradient=True),  # the loop keeps no gradient it was lent
            optimizer=optimizer,
            epochs=config.epochs,
            batch_size=config.batch_size,
            val_fraction=config.val_fraction,
            seed=config.seed,
            callbacks=[*_callbacks(config, optimizer, quiet, stdout, stderr), *callbacks],
            out_dir=out_dir,
            resume=resume,
            overwrite=overwrite,
            augment=_augmentation(config.augment),
            config=asdict(config),
            verbose=0,  # the recipe's own ProgressBar is in the callbacks
            distributed=False if parallel is None else parallel,
        )
        metrics: dict[str, Any] = {
            "status": history.status,
            "reason": history.reason,
            "config": asdict(config),
            "epochs": history.history,
        }
        tested = history.status in ("completed", "stopped") and main
        if tested and test_set is not None and len(test_set):
            test = evaluate(model, test_set)
            metrics |= {f"test_{key}": value for key, value in test.items()}
            print(f"Test: loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}", file=stdout)
        if out_dir is not None and main:
            _write_outputs(Path(out_dir), metrics, classes, plots)
        return metrics


def resume_conflicts(given: dict[str, Any], saved: TrainConfig) -> list[str]:
    """The options in ``given`` that differ from the saved run's (``epochs`` may: it extends)."""
    return [
        field
        for field, value in given.items()
        if field != "epochs" and value != getattr(saved, field)
    ]


def _check_same(given: TrainConfig | None, saved: TrainConfig) -> None:
    if given is None:
        return
    differ = [
        f"{field}={getattr(given, field)!r} (the run has {getattr(saved, field)!r})"
        for field in resume_conflicts(asdict(given), saved)
    ]
    if differ:
        raise ValueError(f"--resume continues the run as it was; these differ: {'; '.join(differ)}")


def _write_outputs(out_dir: Path, metrics: dict[str, Any], classes: list[str], plots: bool) -> None:
    """metrics.json with the test results, and the curves and confusion-matrix pictures."""
    document = json.dumps(cb.strict_json(metrics), indent=2, allow_nan=False)
    atomic_write(out_dir / "metrics.json", document.encode())
    if plots and metrics["epochs"]:
        from glassnet.plots import plot_confusion, plot_curves

        plot_curves(metrics["epochs"], out_dir / "curves.png")
        if "test_confusion_matrix" in metrics:
            matrix = np.array(metrics["test_confusion_matrix"])
            plot_confusion(matrix, classes, out_dir / "confusion.png")
