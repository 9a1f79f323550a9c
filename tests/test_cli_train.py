"""glassnet's command line as a user meets it: help, version, pipes, defaults, first runs."""

import dataclasses
import os
import subprocess
import sys

import pytest

from glassnet import kernels
from glassnet.cli import _train_defaults, main
from glassnet.train import TrainConfig

GLASSNET = [sys.executable, "-m", "glassnet.cli"]


def test_help_answers_without_importing_numpy_or_numba():
    code = (
        "import sys\nfrom glassnet.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy', 'numba') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().endswith("[]"), done.stdout[-300:]
    assert "(default: 128)" in done.stdout and "(default: convnet)" in done.stdout


def test_help_shows_trainconfigs_own_defaults():
    config = TrainConfig()
    assert _train_defaults() == {key: getattr(config, key) for key in _train_defaults()}


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("glassnet 0.")


def test_a_closed_pipe_ends_the_command_quietly():
    command = f"{sys.executable} -m glassnet.cli explain --color never | head -c 1 >/dev/null"
    done = subprocess.run(
        ["bash", "-c", f"{command}; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    assert done.stdout.strip() == "0" and done.stderr == ""


def test_a_first_run_says_that_it_compiles(tmp_path, tiny_dataset, monkeypatch, capsys):
    monkeypatch.setattr(kernels, "cache_is_warm", lambda: False)
    argv = ["train", "--data-dir", str(tiny_dataset), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("Compiling glassnet's kernels") == 1


def test_resume_lists_every_option_that_contradicts_the_run(tmp_path, tiny_dataset, capsys):
    out = str(tmp_path / "r")
    data = ["--data-dir", str(tiny_dataset)]
    assert main(["train", *data, "--epochs", "1", "--out", out, "--quiet"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["train", *data, "--resume", "--out", out, "--lr", "0.1", "--seed", "4"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--lr 0.1 (the run has 0.001)" in err and "--seed 4" in err
    with pytest.raises(SystemExit):
        main(["train", *data, "--epochs", "1", "--out", out])  # holds a run: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", *data, "--epochs", "1", "--out", out, "--overwrite", "--quiet"]) == 0


def test_every_option_of_trainconfig_is_on_the_command_line():
    from glassnet.cli import TRAIN_OPTIONS

    on_the_line = {field for _, field, _, _ in TRAIN_OPTIONS} | {"dataset", "data", "init"}
    assert on_the_line == {f.name for f in dataclasses.fields(TrainConfig)}


def test_an_image_folder_trains_like_the_idx_files_it_was_written_from(tmp_path, capsys):
    """PNGs written from IDX data, trained with --data, reach the IDX run's exact accuracy.

    ImageFolder orders samples by class folder, then file name; the IDX files here hold the
    same images sorted by class, so both runs see one order and draw the same shuffles.
    """
    import json

    import numpy as np
    from PIL import Image

    from glassnet.data import write_idx
    from tests.conftest import make_images

    idx_dir, folder = tmp_path / "idx", tmp_path / "folder"
    idx_dir.mkdir()
    rng = np.random.default_rng(5)
    for split, n in (("train", 400), ("t10k", 100)):
        images, labels = make_images(n, rng)
        order = np.argsort(labels, kind="stable")
        images, labels = images[order], labels[order]
        write_idx(idx_dir / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(idx_dir / f"{split}-labels-idx1-ubyte.gz", labels)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            target = folder / ("train" if split == "train" else "test") / str(label)
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target / f"{i:05d}.png")

    common = ["--epochs", "2", "--batch-size", "32", "--quiet", "--seed", "7"]
    runs = {}
    for name, source in (("idx", ["--data-dir", str(idx_dir)]), ("png", ["--data", str(folder)])):
        assert main(["train", *source, *common, "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    capsys.readouterr()
    assert runs["png"]["test_accuracy"] == runs["idx"]["test_accuracy"]
    assert [e["train_loss"] for e in runs["png"]["epochs"]] == [
        e["train_loss"] for e in runs["idx"]["epochs"]
    ]
