"""The progress bar of :func:`glassnet.fit`: one live line while an epoch runs, one summary after.

On a terminal the line is redrawn in place (``"\\r"``) at most 10 times a second, cut to the
terminal's width minus one so it never wraps (a wrapped line cannot be redrawn, and stacks),
and erased when the epoch ends. Elsewhere (a log file, a pipe) only the summaries appear.
Everything shown passes through :func:`glassnet.data.text.printable`.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from glassnet.data.text import printable
from glassnet.train.callbacks import Callback

MIN_INTERVAL = 0.1  # seconds between redraws
BAR_WIDTH = 30


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _duration(seconds: float) -> str:
    """``"m:ss"``, or ``"h:mm:ss"`` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bar(fraction: float, width: int) -> str:
    filled = min(int(width * fraction), width)
    if filled == width:
        return "=" * width
    return "=" * filled + ">" + "." * (width - filled - 1)


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """``"Epoch 3/15: train loss 0.3012 acc 0.8893 | val loss 0.3120 acc 0.8871 | lr 0.001 |
    8.1s"``; accuracies that are None are left out, a missing validation says so."""
    train = f"train loss {record['train_loss']:.4f}"
    if record.get("train_accuracy") is not None:
        train += f" acc {record['train_accuracy']:.4f}"
    val = "no validation"
    if record.get("val_loss") is not None:
        val = f"val loss {record['val_loss']:.4f}"
        if record.get("val_accuracy") is not None:
            val += f" acc {record['val_accuracy']:.4f}"
    return printable(
        f"Epoch {record['epoch']}/{epochs}: {train} | {val} | lr {record['lr']:g} | "
        f"{record['epoch_seconds']:.1f}s"
    )


class ProgressBar(Callback):
    """Keras-style progress: epoch i/N, a bar, batch/num_batches, running loss and accuracy,
    images/s and ETA, redrawn in place on a terminal; one summary line per epoch.

    Args:
        stream: where the live line goes (default sys.stderr).
        live: redraw the line (default: ``stream.isatty()``); False prints summaries only.
        summary_stream: where the per-epoch summaries go (default sys.stdout).
        clock: seconds, monotonic (default time.perf_counter).
    images/s and the ETA count only this epoch's batches run by this process, so a run resumed
    mid-epoch reports its real speed. Nothing is shown unless ``trainer.is_main_process``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        *,
        summary_stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.summary_stream = sys.stdout if summary_stream is None else summary_stream
        self.live = _isatty(self.stream) if live is None else bool(live)
        self.clock = clock
        self._drawn_width = 0  # width of the line on screen, 0 when there is none

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._started = epoch, self.clock()
        self._first_batch: int | None = None
        self._images = 0
        self._last_draw: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        if not (self.live and self.trainer.is_main_process):
            return
        if self._first_batch is None:
            self._first_batch = batch
        self._images += logs["size"]
        now = self.clock()
        last = batch + 1 >= self.trainer.num_batches
        if self._last_draw is not None and now - self._last_draw < MIN_INTERVAL and not last:
            return
        self._last_draw = now
        width = max(shutil.get_terminal_size(fallback=(80, 24)).columns - 1, 1)
        self._write("\r" + self._line(batch, logs, now, width).ljust(width))
        self._drawn_width = width

    def _line(self, batch: int, logs: dict, now: float, width: int) -> str:
        done, total = batch + 1, self.trainer.num_batches
        elapsed = now - self._started
        rate = self._images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / (done - self._first_batch) * (total - done)
        head = f"Epoch {self._epoch + 1}/{self.trainer.epochs}"
        stats = {"batches": f"{done}/{total}", "loss": f"loss {logs['loss_mean']:.4f}"}
        if logs.get("accuracy_mean") is not None:
            stats["acc"] = f"acc {logs['accuracy_mean']:.4f}"
        stats |= {"rate": f"{rate:,.0f} img/s", "eta": f"ETA {_duration(eta)}"}
        for least_needed in ("rate", "acc"):  # a narrow terminal keeps the loss and the ETA
            if len(head) + 1 + len(" ".join(stats.values())) <= width:
                break
            stats.pop(least_needed, None)
        tail = " ".join(stats.values())
        room = min(width - len(head) - len(tail) - 4, BAR_WIDTH)  # 4: " [" and "] "
        bar = f" [{_bar(done / total, room)}] " if room >= 10 else " "
        return printable(head + bar + tail)[:width]

    def _clear(self) -> None:
        if self._drawn_width:
            self._write("\r" + " " * self._drawn_width + "\r")
            self._drawn_width = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.trainer.is_main_process:
            self._clear()
            print(epoch_summary(logs, self.trainer.epochs), file=self.summary_stream, flush=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.trainer.is_main_process:
            return
        self._clear()
        logs = logs or {}
        status, reason = logs.get("status"), logs.get("reason")
        if status not in (None, "completed"):
            line = f"Training {status}" + (f": {reason}" if reason else "")
            print(printable(line), file=self.summary_stream, flush=True)
