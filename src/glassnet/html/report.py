"""A training run as one HTML page: ``report.html`` beside the run's metrics.json.

The page shows the configuration, the loss and accuracy curves, the test set's confusion
matrix and per-class accuracy, the most confidently misclassified test images with their
top-3 probabilities, and the time each epoch took. It is built from what a run directory
holds (metrics.json, checkpoint.safetensors) and the test set its configuration names
(a built-in dataset already on disk, never downloaded, or its ``data`` path); the test set is
run through the model in batches under ``no_grad``. Without a test set the page says why.
Shapes: images (N, C, H, W), labels (N,), probabilities (N, K) over K classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glassnet.functional import softmax
from glassnet.html.page import (
    GRADIENT_COLOR,
    SOFTMAX_COLOR,
    document,
    heat_map,
    line_chart,
    picture,
    table,
    tag,
    text,
    write_html,
)
from glassnet.nn.module import Module

REPORT = "report.html"
MISCLASSIFIED = 12  # images in the grid


@dataclass
class TestResults:
    """The model on the test set: what the report's test sections show."""

    accuracy: float
    confusion: np.ndarray  # (K, K) counts; rows true class, columns predicted
    mistakes: list[tuple[np.ndarray, int, np.ndarray]]  # (image, true class, probabilities)


@dataclass
class RunReport:
    """Everything report.html shows; ``_repr_html_`` shows it in a notebook."""

    run_dir: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    status: str | None
    classes: list[str]
    test: TestResults | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why there is no test section

    def html(self) -> str:
        return document(f"glassnet run report: {self.run_dir.name}", self.body())

    def body(self) -> str:
        return report_body(self)

    def _repr_html_(self) -> str:
        return self.body()

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the page (default: ``run_dir/report.html``) atomically."""
        return write_html(self.run_dir / REPORT if path is None else path, self.html())


# --- gathering ----------------------------------------------------------------------------


def run_report(
    run_dir: str | os.PathLike,
    *,
    model: Module | None = None,
    history: list[dict[str, Any]] | None = None,
    status: str | None = None,
    config: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    sample_shape: tuple[int, ...] | None = None,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> RunReport:
    """The report of the run in ``run_dir``; what is given is used instead of its files.

    Args:
        run_dir: a ``glassnet train --out`` directory (metrics.json, checkpoint.safetensors).
        model, history, status, config, classes, sample_shape: the run's (sample_shape: one
            input's, e.g. (1, 28, 28)), when the caller has them (the report callback at the
            end of training); otherwise read from the run's files.
        test_data: (images (N, C, H, W), labels (N,)); default: the config's test set.
        data_dir: where to look first for a built-in dataset's files.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {str(run_dir)!r} is not a directory")
    saved = _read_run(run_dir) if model is None or history is None else {}
    model = model if model is not None else saved["model"]
    config = config if config is not None else saved.get("config") or {}
    history = history if history is not None else saved.get("history") or []
    status = status if status is not None else saved.get("status")
    classes = classes or saved.get("classes")
    sample_shape = sample_shape or saved.get("sample_shape")
    report = RunReport(run_dir, config, history, status, [])
    if test_data is None:
        test_data = _open_test_set(config, data_dir, report.notes)
    if (
        test_data is not None
        and sample_shape
        and tuple(test_data[0].shape[1:]) != tuple(sample_shape)
    ):
        shape = tuple(test_data[0].shape[1:])
        report.notes.append(
            f"no test set: its images are {shape}, the model's {tuple(sample_shape)}"
        )
        test_data = None
    report.test = _test_results(model, test_data, report.notes)
    count = report.test.confusion.shape[0] if report.test else len(classes or [])
    report.classes = [str(c) for c in classes] if classes else [str(i) for i in range(count)]
    if report.test and len(report.classes) != count:
        report.notes.append(f"the run names {len(report.classes)} classes, the model gives {count}")
        report.classes = [str(i) for i in range(count)]
    return report


def write_report(run_dir: str | os.PathLike, **options: Any) -> Path:
    """Write ``run_dir/report.html`` (see :func:`run_report` for ``options``); its path."""
    return run_report(run_dir, **options).save()


def _read_run(run_dir: Path) -> dict[str, Any]:
    """The model, config, history, status and class names a run directory records."""
    from glassnet.model_file import read_model_file

    checkpoint = run_dir / "checkpoint.safetensors"
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint} does not exist: is {run_dir} a training run?")
    opened = read_model_file(checkpoint)
    run = opened.metadata.get("run") if isinstance(opened.metadata.get("run"), dict) else {}
    found = {
        "model": opened.model,
        "classes": opened.classes,
        "sample_shape": opened.input_shape,
        "config": run.get("config"),
        "history": run.get("history"),
    }
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
        except ValueError as error:
            raise ValueError(f"{metrics_path} is not valid JSON: {error}") from None
        if isinstance(metrics, dict):
            found |= {k: metrics[k] for k in ("config", "status") if k in metrics}
            found["history"] = metrics.get("epochs", found["history"])
    return found


def _open_test_set(
    config: dict[str, Any], data_dir: str | os.PathLike | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The test set the config names, if it is on disk; else None and a note saying why."""
    from glassnet.data import load, open_data

    try:
        if isinstance(config.get("data"), str):
            _, test_set, _ = open_data(config["data"])
            if test_set is None or len(test_set) == 0:
                notes.append(f"{config['data']} holds no test set")
                return None
            return test_set[np.arange(len(test_set))]
        if isinstance(config.get("dataset"), str):
            return load(config["dataset"], "test", data_dir, download=False)
    except (OSError, ValueError) as error:
        notes.append(f"no test set: {error}")
        return None
    notes.append("no test set: the run's configuration names no dataset")
    return None


def _test_results(
    model: Module, test_data: tuple[np.ndarray, np.ndarray] | None, notes: list[str]
) -> TestResults | None:
    """Predictions on the test set, batched in eval mode under no_grad."""
    from glassnet.train.loop import predict

    if test_data is None:
        return None
    x, y = np.asarray(test_data[0]), np.asarray(test_data[1])
    try:
        logits = predict(model, x)
    except ValueError as error:  # e.g. the config's test images do not fit the model
        notes.append(f"the model cannot run on the test set: {error}")
        return None
    if logits.ndim != 2 or len(y) == 0 or y.max() >= logits.shape[1]:
        notes.append("the model's outputs are not class scores for the test labels")
        return None
    probs = softmax(logits.astype(np.float64), axis=1)
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((probs.shape[1],) * 2, dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    wrong = np.flatnonzero(predicted != y)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:MISCLASSIFIED]
    mistakes = [(x[i], int(y[i]), probs[i]) for i in worst]
    return TestResults(float(np.mean(predicted == y)), confusion, mistakes)


# --- rendering ----------------------------------------------------------------------------


def report_body(report: RunReport) -> str:
    status = text(report.status or "unknown")
    parts = [
        tag("h1", text(f"Run report: {report.run_dir.name}")),
        tag("p", f"Status: <b>{status}</b>; {len(report.history)} epochs.", class_="note"),
        *[tag("p", text(note), class_="note") for note in report.notes],
        tag("h2", "Configuration"),
        table(("Option", "Value"), [(k, v) for k, v in report.config.items()], names=2),
        tag("h2", "Curves"),
        _curves(report.history),
    ]
    if report.test is not None:
        parts += _test_sections(report.test, report.classes)
    parts += [tag("h2", "Timing"), _timing(report.history)]
    return "\n".join(parts)


def _column(history: list[dict[str, Any]], key: str) -> list[float | None]:
    return [record.get(key) for record in history]


def _curves(history: list[dict[str, Any]]) -> str:
    if not history:
        return tag("p", "No epoch finished.", class_="note")
    epochs = [record.get("epoch", i + 1) for i, record in enumerate(history)]
    charts = []
    for metric in ("loss", "accuracy"):
        series = [(f"train {metric}", _column(history, f"train_{metric}"), SOFTMAX_COLOR)]
        if any(v is not None for v in _column(history, f"val_{metric}")):
            series.append(
                (f"validation {metric}", _column(history, f"val_{metric}"), GRADIENT_COLOR)
            )
        charts.append(line_chart(epochs, series, f"{metric} per epoch"))
    return tag("div", " ".join(charts))


def _test_sections(test: TestResults, classes: list[str]) -> list[str]:
    confusion = test.confusion
    indices = [str(i) for i in range(len(classes))]
    labels = [[str(v) for v in row] for row in confusion]
    totals = confusion.sum(axis=1)
    per_class = confusion.diagonal() / np.maximum(totals, 1)
    rows = [
        (i, name, f"{acc:.4f}", int(total))
        for i, name, acc, total in zip(indices, classes, per_class, totals, strict=True)
    ]
    return [
        tag("h2", "Test set"),
        tag("p", f"Accuracy {test.accuracy:.4f} on {int(confusion.sum())} images."),
        tag("h3", "Confusion matrix (rows: true class, columns: predicted)"),
        heat_map(confusion, labels, indices, indices, "confusion matrix", cell=40),
        tag("h3", "Per-class accuracy"),
        table(("#", "Class", "Accuracy", "Images"), rows, names=2),
        tag("h3", "The most confidently misclassified test images"),
        _mistakes(test.mistakes, classes),
    ]


def _mistakes(mistakes: list[tuple[np.ndarray, int, np.ndarray]], classes: list[str]) -> str:
    if not mistakes:
        return tag("p", "None: every test image is classified correctly.", class_="note")
    figures = []
    for image, true, probs in mistakes:
        top = np.argsort(-probs, kind="stable")[:3]
        lines = [f"true: {classes[true]}"] + [f"{classes[c]} {probs[c]:.3f}" for c in top]
        shown = image if image.ndim == 3 and image.shape[0] in (1, 3) else image.reshape(-1)[None]
        figures.append(picture(shown, lines, size=72))
    return tag("div", "".join(figures))


def _timing(history: list[dict[str, Any]]) -> str:
    seconds = [record.get("epoch_seconds") or 0.0 for record in history]
    rows = [
        (
            record.get("epoch", i + 1),
            _fixed(record.get("train_loss")),
            _fixed(record.get("train_accuracy")),
            _fixed(record.get("val_loss")),
            _fixed(record.get("val_accuracy")),
            _fixed(record.get("lr"), "g"),
            f"{s:.1f}",
        )
        for i, (record, s) in enumerate(zip(history, seconds, strict=True))
    ]
    header = ("Epoch", "Train loss", "Train acc", "Val loss", "Val acc", "lr", "Seconds")
    total = tag("p", f"Total training time {sum(seconds):.1f} s.")
    return total + table(header, rows)


def _fixed(value: Any, kind: str = ".4f") -> str:
    return "" if not isinstance(value, (int, float)) else format(value, kind)
