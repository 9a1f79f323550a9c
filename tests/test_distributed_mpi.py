"""Runs over several processes: ``mpiexec -n 2`` and ``-n 3`` against one process.

Each test starts the scripts in tests/mpi_scripts/ (or ``glassnet train``) under mpiexec and
compares what rank 0 saved with a run in one process. Skipped where mpi4py or mpiexec is
missing (``pip install 'glassnet[mpi]'``).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glassnet.checkpoint import load_checkpoint
from tests.conftest import write_dataset

pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'glassnet[mpi]'")
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec next to Python or on PATH", allow_module_level=True)
SCRIPTS = Path(__file__).parent / "mpi_scripts"
# Neither this process's MPI environment (a test run under mpiexec) nor a launcher's variables
# may leak into the runs; hydra runs as root as it does as anyone else.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "HYDRA"))}
ENV["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), ENV.get("PYTHONPATH", "")])


def run(command: list, processes: int | None, timeout: float = 120, **options):
    """``command`` under ``mpiexec -n processes`` (None: alone), its CompletedProcess."""
    prefix = [] if processes is None else [MPIEXEC, "-n", str(processes)]
    return subprocess.run(
        [*prefix, *map(str, command)], capture_output=True, text=True, timeout=timeout, env=ENV,
        **options,
    )  # fmt: skip


def fit_run(tmp_path: Path, processes: int | None, *args: str) -> tuple[dict, dict]:
    out = tmp_path / f"run-{processes}.npz"
    result = run([sys.executable, SCRIPTS / "fit_run.py", out, *args], processes)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as weights:
        return dict(weights), json.loads(Path(f"{out}.json").read_text())


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


CASES = {
    # Dropout; 202 samples in batches of 20: the last batch of 2 leaves rank 2 of 3 idle
    "dropout-float64": (("mlp", "float64", "202"), 1e-12),
    "dropout-float32": (("mlp", "float32", "202"), 1e-5),
    # class weights and ignored targets, spread unevenly over the ranks: a slice's mean is
    # not its share of the batch's mean (as DDP averages it); some slices count nothing
    "weighted-ignored-float64": (("mlp", "float64", "202", "--weighted"), 1e-12),
    # SyncBatchNorm, augmentation, and ranks whose own initial weights differ (rank 0's win)
    "syncbn-float64": (
        ("bn", "float64", "206", "--sync-batchnorm", "--augment", "--unseeded"),
        1e-12,
    ),
}


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_p_processes_take_the_steps_of_one(tmp_path, case, processes):
    args, tolerance = CASES[case]
    one, one_log = fit_run(tmp_path, None, *args)
    many, many_log = fit_run(tmp_path, processes, *args)
    assert many_log["size"] == processes and many_log["ranks_agree"]
    for key, value in one.items():
        if value.dtype.kind == "f":
            assert relative_error(many[key], value) < tolerance, key
        else:
            np.testing.assert_array_equal(many[key], value)
    for field in ("train_accuracy", "val_accuracy"):
        assert [h[field] for h in many_log["history"]] == [h[field] for h in one_log["history"]]
    for field in ("train_loss", "val_loss"):
        np.testing.assert_allclose(
            [h[field] for h in many_log["history"]],
            [h[field] for h in one_log["history"]],
            rtol=1e-6,
            err_msg=field,
        )


def test_per_process_batchnorm_trains_and_keeps_the_ranks_equal(tmp_path):
    """Per-rank statistics are not one process's maths; the ranks' weights still agree."""
    weights, log = fit_run(tmp_path, 2, "bn", "float32", "206")
    assert log["ranks_agree"]
    losses = [h["train_loss"] for h in log["history"]]
    assert losses[-1] < losses[0] and all(np.isfinite(v).all() for v in weights.values())


@pytest.mark.parametrize("processes", [2, 3])
def test_vocab_parallel_cross_entropy_equals_one_process(tmp_path, processes):
    out = tmp_path / "vocab.json"
    result = run([sys.executable, SCRIPTS / "vocab_parallel.py", out], processes)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for options, errors in report["grid"].items():
        assert max(errors) < 1e-6, options
    assert max(report["errors_50k"]) < 1e-6
    # float64, entry by entry: the loss and dL/dx to round-off; dL/dW's tiny entries (classes
    # with p ~ 1e-5) carry a little more relative error
    loss_error, grad_x_error, grad_w_error = report["errors_50k_float64"]
    assert loss_error < 1e-12 and grad_x_error < 1e-12 and grad_w_error < 1e-8
    # C = 50,000, D = 128 float32: weight and gradient 25.6 MB each on one process
    assert max(report["peak_bytes"]) < 110e6 / processes
    print(f"peak bytes per rank, P={processes}: {report['peak_bytes']}")


def test_an_exception_on_one_rank_ends_the_job_naming_it(tmp_path):
    started = time.monotonic()
    result = run([sys.executable, SCRIPTS / "fail_run.py", tmp_path], 2, timeout=90)
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    assert "glassnet: rank 1 of 2 failed: RuntimeError: a deliberate failure" in result.stderr
    _, metadata = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert metadata["run"]["epoch"] == 1  # epoch 1's checkpoint, complete and readable


def test_a_rank_that_stops_answering_ends_the_job_naming_it(tmp_path):
    started = time.monotonic()
    result = run([sys.executable, SCRIPTS / "hang_run.py", tmp_path], 2, timeout=90)
    assert time.monotonic() - started < 60  # the 3 s timeout, not rank 1's 120 s sleep
    assert result.returncode != 0
    assert "no answer within 3 s during the gradient allreduce" in result.stderr
    assert "rank 1 of 2 died or hangs" in result.stderr


def test_killing_a_rank_ends_the_job_and_resume_continues(tmp_path):
    """SIGKILL: MPICH's launcher ends the job at once and names the signal. (Hydra does this
    even under -disable-auto-cleanup once it reaps the killed process, racing rank 0's own
    report: the test below covers rank 0's side.)"""
    data = write_dataset(tmp_path / "data", n_train=320, n_test=50)
    out = tmp_path / "run"
    glassnet = BIN / "glassnet"
    command = [MPIEXEC, "-n", "3", glassnet, "train", "--data-dir", data, "--out", out]
    command += ["--model", "mlp", "--epochs", "200", "--batch-size", "16", "--quiet"]
    process = subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        first = process.stdout.readline()  # "... on 3 processes (rank 0: pid 1 on host, ...)"
        assert "Data-parallel training on 3 processes" in first, process.stderr.read()
        pid = int(first.split("1: pid ")[1].split()[0])
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # mid-epoch
        killed = time.monotonic()
        os.kill(pid, 9)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - killed < 60 and process.returncode != 0
    # the launcher's banner names the pid of the first exit it hears of, which may be a rank
    # it killed itself; the signal line always comes
    launcher = stdout + stderr
    assert "Killed (signal 9)" in launcher, (process.returncode, launcher[-3000:])
    _, metadata = load_checkpoint(out / "checkpoint.safetensors")
    done = metadata["run"]["epoch"]
    assert 1 <= done < 200
    resume = ["--out", out, "--resume", "--epochs", done + 1, "--data-dir", data]
    result = run([glassnet, "train", *resume], 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch {done + 1}/{done + 1}" in result.stdout
    assert load_checkpoint(out / "checkpoint.safetensors")[1]["run"]["epoch"] == done + 1


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_whose_process_ends_is_named_by_the_survivors(tmp_path, rank):
    """Under -disable-auto-cleanup the launcher leaves a process that ended (no signal) to the
    survivors: rank 0 names it, or, when rank 0 itself is gone, the others do."""
    command = [MPIEXEC, "-disable-auto-cleanup", "-n", "3"]
    started = time.monotonic()
    result = run([*command, sys.executable, SCRIPTS / "exit_run.py", tmp_path, rank], None, 90)
    assert time.monotonic() - started < 60 and result.returncode != 0
    reports = [line for line in result.stderr.splitlines() if line.startswith("glassnet: ")]
    assert reports, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    # the ones the launcher let through before it ended the job; with rank 0 gone, a rank may
    # also find the other survivor gone, if that one already ended the job
    named = rf"glassnet: the process of rank {rank}(, \d)* of 3 ended during the gradient "
    for report in reports:
        assert re.match(named + "allreduce of step 14; ending all ranks", report), report
    _, metadata = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert metadata["run"]["epoch"] == 1  # epoch 1's checkpoint, complete and readable
