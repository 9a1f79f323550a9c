"""The callback that writes report.html at the end of a training run (see :mod:`.report`)."""

from __future__ import annotations

import os
from pathlib import Path

from glassnet.html.report import write_report
from glassnet.train.callbacks import Callback

FINISHED = ("completed", "stopped")  # an interrupted or diverged run gets no report


class RunReportWriter(Callback):
    """Write ``out_dir/report.html`` once training has finished (completed or stopped early).

    It runs the model on the test set the run's config names (a built-in dataset on disk, or
    its ``data`` path) for the confusion matrix and the misclassified images; without one
    the report says so. Only the main process writes.
    """

    main_process_only = True

    def __init__(self, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None):
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir

    def on_train_end(self, logs: dict | None = None) -> None:
        status = (logs or {}).get("status")
        if not self.trainer.is_main_process or status not in FINISHED:
            return
        trainer = self.trainer
        train_set = getattr(trainer, "train_set", None)
        write_report(
            self.out_dir,
            model=trainer.model,
            history=trainer.history,
            status=status,
            config=getattr(trainer, "config", None) or {},
            classes=getattr(train_set, "classes", None),
            sample_shape=getattr(train_set, "sample_shape", None),
            data_dir=self.data_dir,
        )
