"""report.html for a training run: the callback, glassnet report, and what the page shows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glassnet import fit
from glassnet.cli import main
from glassnet.data import ImageFolder
from glassnet.html import run_report
from glassnet.html.report_callback import RunReportWriter
from glassnet.train.callbacks import Callback
from tests.test_html_support import HOSTILE, Page, check_page, image_folder, tiny_convnet

CLASSES = ["boots", HOSTILE, "zebra"]  # sorted, as ImageFolder lists them: "<" < "b"


@pytest.fixture
def run(tmp_path):
    """A finished 2-epoch run on an image folder whose class names come from the user."""
    data = tmp_path / "data"
    image_folder(data, CLASSES)
    train_set = ImageFolder(data / "train", image_size=(8, 8), channels=1)
    out = tmp_path / "run"
    fit(
        tiny_convnet(len(train_set.classes)),
        train_set,
        epochs=2,
        batch_size=4,
        out_dir=out,
        callbacks=[RunReportWriter(out)],
        config={"data": str(data), "epochs": 2, "note": "<b>not bold</b>"},
        verbose=0,
    )
    return out


def test_a_finished_run_leaves_report_html_beside_metrics_json(run):
    assert (run / "metrics.json").exists() and (run / "report.html").exists()
    assert not list(run.glob(".report.html.*"))  # written atomically: no temporary left
    source = (run / "report.html").read_text(encoding="utf-8")
    page = check_page(source)
    text = page.text()
    for heading in ("Configuration", "Curves", "Confusion matrix", "Per-class accuracy",
                    "misclassified", "Timing"):  # fmt: skip
        assert heading in text
    assert HOSTILE not in source and "&lt;img src=x onerror=alert(1)&gt;" in source
    assert "<b>not bold</b>" not in source and "&lt;b&gt;not bold&lt;/b&gt;" in source
    assert "Accuracy" in text and "on 12 images" in text
    assert page.count("svg") == 3  # two curves and the confusion matrix
    assert len(source.encode()) < 300_000


def test_the_report_agrees_with_the_model_on_the_test_set(run):
    report = run_report(run)
    classes = sorted(CLASSES)
    assert report.classes == classes and report.status == "completed"
    assert report.test.confusion.sum() == 12 and len(report.history) == 2
    correct = np.trace(report.test.confusion)
    assert report.test.accuracy == pytest.approx(correct / 12)
    assert len(report.test.mistakes) == 12 - correct
    confidences = [probs[np.argmax(probs)] for _, _, probs in report.test.mistakes]
    assert confidences == sorted(confidences, reverse=True)  # most confident first
    assert all(np.argmax(probs) != true for _, true, probs in report.test.mistakes)


def test_glassnet_report_rewrites_it_from_the_run_directory(run, capsys):
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = check_page((run / "report.html").read_text(encoding="utf-8"))
    assert json.loads((run / "metrics.json").read_text())["status"] in page.text()


def test_without_a_test_set_the_report_says_why(tmp_path):
    out = tmp_path / "run"
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    y = np.arange(8) % 3
    fit(tiny_convnet(), (x, y), epochs=1, out_dir=out, callbacks=[RunReportWriter(out)], verbose=0)
    text = check_page((out / "report.html").read_text()).text()
    assert "no test set" in text and "Confusion matrix" not in text and "Timing" in text


def test_an_interrupted_run_gets_no_report(tmp_path):
    class Interrupt(Callback):
        def on_epoch_end(self, epoch, logs):
            self.trainer.stop("interrupted", "test")

    out = tmp_path / "run"
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 3
    callbacks = [Interrupt(), RunReportWriter(out)]
    fit(tiny_convnet(), (x, y), epochs=2, out_dir=out, callbacks=callbacks, verbose=0)
    assert not (out / "report.html").exists()


def test_report_of_a_directory_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path)])
    assert info.value.code == 2
    assert "checkpoint.safetensors does not exist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="run_dir"):
        run_report(tmp_path / "missing")


def test_notebooks_show_the_report(run):
    body = run_report(run)._repr_html_()
    assert body.startswith("<h1>Run report") and "<html" not in body
    assert Page(body).errors == []


def test_a_test_set_of_other_images_is_left_out_with_a_note(run):
    x = np.zeros((5, 1, 28, 28), np.float32)
    report = run_report(run, test_data=(x, np.zeros(5, np.int64)))
    assert report.test is None and "(1, 28, 28), the model's (1, 8, 8)" in report.notes[-1]
