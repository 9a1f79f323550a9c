"""Runs and checkpoints under bad input: locks, leftovers, hostile checkpoints, bad options."""

import json
import subprocess
import sys

import numpy as np
import pytest

from glassnet.checkpoint import (
    CheckpointError,
    DirectoryLockedError,
    load_checkpoint,
    save_checkpoint,
)
from glassnet.cli import main
from glassnet.model_file import read_model_file
from glassnet.train import TrainConfig, train


def _run(tmp_path, tiny_arrays, epochs=1, **options):
    out = tmp_path / "run"
    config = TrainConfig(epochs=epochs, batch_size=64, **options)
    train(config, out, data=tiny_arrays, plots=False, quiet=True)
    return out


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_second_run_on_a_locked_out_dir_names_the_holder(tmp_path, tiny_arrays, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLockedError, match=rf"in use by .*pid {holder.pid}"):
            train(TrainConfig(epochs=1), out, data=tiny_arrays, quiet=True)
        with pytest.raises(SystemExit) as info:  # refused before any data is looked for
            main(["train", "--out", str(out), "--epochs", "1"])
        assert info.value.code == 2 and "in use by" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    _run(tmp_path, tiny_arrays)  # released with its process: the next run goes ahead


HOLD_LOCK = """
import sys, time
from glassnet.checkpoint import lock_directory
with lock_directory(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_killed_write_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    target = tmp_path / "checkpoint.safetensors"
    leftover = tmp_path / ".checkpoint.safetensors.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / ".other.safetensors.x.tmp"
    unrelated.write_bytes(b"not ours")
    save_checkpoint(target, {"w": np.zeros(3)}, {"epoch": 1})
    assert not leftover.exists() and unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.safetensors.x.tmp",
        "checkpoint.safetensors",
    ]


def test_without_validation_metrics_json_holds_null_not_nan(tmp_path, tiny_arrays):
    out = _run(tmp_path, tiny_arrays, val_fraction=0.0)
    metrics = _strict_json((out / "metrics.json").read_text())
    assert metrics["epochs"][0]["val_loss"] is None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"lr": float("inf")}, "finite"),
        ({"lr": float("nan")}, "finite"),
        ({"epochs": 0}, "epochs=0"),
        ({"val_fraction": 1.0}, r"\[0, 1\)"),
    ],
)
def test_bad_training_options_are_named(options, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**options)


def test_a_validation_fraction_that_leaves_no_training_images(tmp_path, tiny_arrays):
    with pytest.raises(ValueError, match="leaves no training samples"):
        _run(tmp_path, tiny_arrays, val_fraction=0.9999)  # 640 * 0.9999 rounds to 640


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--lr", "inf"], ["--val-fraction", "1"]])
def test_bad_cli_options_exit_2_before_loading_data(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path), *argv])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_resume_to_fewer_epochs_is_an_error_that_touches_nothing(tmp_path, tiny_arrays):
    out = _run(tmp_path, tiny_arrays, epochs=2)

    def files():  # the lock file records each holder's pid; everything else must stay put
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}

    before = files()
    for epochs, words in ((-1, "epochs=-1 must be a positive integer"), (2, "completed 2 epochs")):
        with pytest.raises(ValueError, match=words):
            train(None, out, resume=True, epochs=epochs, data=tiny_arrays, quiet=True)
    assert files() == before


def test_a_missing_data_dir_is_an_error_and_is_not_created(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit):
        main(["train", "--data-dir", str(missing), "--out", str(tmp_path / "r")])
    assert "is not a directory" in capsys.readouterr().err and not missing.exists()


def _resign(path, edit_arrays=None, edit_meta=None):
    arrays, meta = load_checkpoint(path)
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        edit_meta(meta)
    save_checkpoint(path, arrays, meta)


@pytest.mark.parametrize(
    ("edit_arrays", "edit_meta", "words"),
    [
        (lambda a: a.pop("model.8.weight"), None, r"missing keys \['8.weight'\]"),
        (lambda a: a.update({"model.8.weight": np.zeros((3, 3))}), None, "8.weight"),
        (None, lambda m: m["run"].pop("rng"), r"rng \(missing\)"),
        (None, lambda m: m["run"].update(epoch="two"), r"epoch \(str\)"),
        (None, lambda m: m["run"]["config"].update(colour="red"), "unknown training options"),
        (None, lambda m: m["run"]["config"].update(lr=-1), "lr=-1"),
        (None, lambda m: m["run"].update(rng={"state": 1}), "cannot be resumed"),
        (None, lambda m: m["run"]["options"].update(batch_size=7), "batch_size=64"),
    ],
)
def test_a_checkpoint_that_passes_its_hash_but_does_not_fit_is_a_clear_error(
    tmp_path, tiny_arrays, edit_arrays, edit_meta, words, capsys
):
    out = _run(tmp_path, tiny_arrays)
    checkpoint = out / "checkpoint.safetensors"
    _resign(checkpoint, edit_arrays, edit_meta)
    with pytest.raises(ValueError, match=words):  # CheckpointError is a ValueError
        train(None, out, resume=True, epochs=2, data=tiny_arrays, quiet=True, plots=False)
    with pytest.raises(SystemExit) as info:
        main(["train", "--resume", "--out", str(out), "--epochs", "3"])
    assert info.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_evaluate_and_predict_refuse_weights_from_another_network(tmp_path, tiny_arrays, capsys):
    out = _run(tmp_path, tiny_arrays)
    checkpoint = out / "checkpoint.safetensors"
    _resign(checkpoint, lambda a: a.update({"model.0.weight": np.zeros((8, 1, 3, 3))}))
    with pytest.raises(CheckpointError, match=r"do not fit its architecture.*0\.weight"):
        read_model_file(checkpoint)
    for command in (["evaluate", str(checkpoint)], ["predict", str(checkpoint), "x.png"]):
        with pytest.raises(SystemExit) as info:
            main(command)
        assert info.value.code == 2 and "0.weight" in capsys.readouterr().err


def test_a_checkpoint_from_a_newer_format_names_both_versions(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": np.zeros(2)}, {})
    with safe_open(path, "np") as f:
        arrays = {name: f.get_tensor(name) for name in f.keys()}
        header = f.metadata() | {"format": "glassnet-checkpoint/7"}
    save_file(arrays, path, metadata=header)
    with pytest.raises(CheckpointError, match="format version 7, written by a newer glassnet"):
        load_checkpoint(path)


def test_evaluate_refuses_a_model_trained_on_other_classes(tmp_path, tiny_dataset, capsys):
    out = tmp_path / "run"
    data = ["--data-dir", str(tiny_dataset)]  # Fashion-MNIST's files have MNIST's names
    argv = ["train", "--dataset", "fashion-mnist", *data, "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    with pytest.raises(SystemExit):
        main(["evaluate", str(out / "checkpoint.safetensors"), "--dataset", "mnist", *data])
    assert "trained on other classes" in capsys.readouterr().err
