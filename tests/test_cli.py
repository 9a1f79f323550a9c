"""The command line: train, evaluate, predict, summary, trace."""

import dataclasses
import json

import numpy as np
import pytest

from glassnet.cli import main
from glassnet.data import DATASETS, MNIST, write_idx
from tests.test_data import dead_mirror


@pytest.fixture
def trained(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_dataset),
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out, tiny_dataset, capsys.readouterr().out


def test_train_prints_epoch_summaries_and_writes_outputs(trained):
    out, _, printed = trained
    assert "Epoch 1/2: train loss" in printed and "Epoch 2/2" in printed and "Test: loss" in printed
    for name in ("checkpoint.safetensors", "metrics.json", "curves.png", "confusion.png"):
        assert (out / name).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["batch_size"] == 32 and len(metrics["epochs"]) == 2
    # the report beside metrics.json, with the test set found through --data-dir
    report = (out / "report.html").read_text()
    assert "Confusion matrix" in report and "most confidently misclassified" in report
    assert "report.html" in printed


def test_no_report_skips_the_page(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(tiny_dataset), "--epochs", "1", "--out", str(out)]
    assert main([*args, "--quiet", "--no-report"]) == 0
    assert (out / "metrics.json").is_file() and not (out / "report.html").exists()


def test_resume_extends_a_finished_run(trained, capsys):
    out, data_dir, _ = trained
    assert (
        main(
            [
                "train",
                "--resume",
                "--out",
                str(out),
                "--epochs",
                "3",
                "--data-dir",
                str(data_dir),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Resuming from" in printed and "Epoch 3/3" in printed and "Epoch 2/3" not in printed


def test_evaluate_prints_accuracy_per_class_and_confusion(trained, capsys):
    out, data_dir, _ = trained
    assert main(["evaluate", str(out / "checkpoint.safetensors"), "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "mnist test set (200 images)" in printed and "accuracy" in printed
    assert "confusion matrix" in printed and len(printed.splitlines()) > 25


def test_predict_png_and_idx(trained, tmp_path, capsys):
    from PIL import Image

    from tests.conftest import make_images

    out, _, _ = trained
    images, _ = make_images(3, np.random.default_rng(9))
    Image.fromarray(images[0]).resize((56, 56)).save(tmp_path / "digit.png")
    write_idx(tmp_path / "few.idx", images)
    assert (
        main(
            [
                "predict",
                str(out / "checkpoint.safetensors"),
                str(tmp_path / "digit.png"),
                str(tmp_path / "few.idx"),
                "--limit",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'digit.png'}: ") and lines[0].count(" 0.") >= 3
    assert lines[1].startswith(f"{tmp_path / 'few.idx'}[0]: ")
    assert lines[-1] == "... 1 more (raise --limit to see them)"


def test_summary_and_trace(capsys):
    assert main(["summary"]) == 0
    assert "Total params: 34,826" in capsys.readouterr().out
    assert main(["trace"]) == 0
    printed = capsys.readouterr().out
    assert "conv2d_backward (3)     -> (32, 13, 13), dW (64, 32, 3, 3), db (64,)" in printed


def test_missing_dataset_and_broken_checkpoint_exit_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GLASSNET_DATA", raising=False)
    # Tests never reach the internet: the only mirror is a loopback port where nothing listens.
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(MNIST, mirrors=(dead_mirror(),)))
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--data-dir",
                str(tmp_path / "none"),
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert info.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "bad.safetensors")])
    assert "not a" in capsys.readouterr().err
