"""Peak memory (RSS) of the seeds' recipe: `glassnet train` against the same recipe in PyTorch.

Run:  python benchmarks/bench_memory.py [--epochs 1] [--threads 2]

Each side runs in its own new process, from start to exit, and the peak resident set size
the kernel reports for it (``wait4``'s ru_maxrss) is compared:
  glassnet  ``glassnet train --dataset fashion-mnist --epochs N`` into a temporary --out
            (loading the data, training, validation, the test set, checkpoints and plots);
  pytorch   bench_train.py's PyTorch loop on the same arrays (Fashion-MNIST loaded with
            glassnet's loader, the same validation split), for the same epochs.
The PyTorch side loads the data through glassnet (NumPy only, no kernels), so both hold the
same dataset arrays. Peak memory does not grow after the first epoch; one is enough.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

TORCH_SIDE = """
import sys
sys.path.insert(0, {here!r})
import glassnet  # OpenBLAS settings first, as in the other benchmarks
import numpy as np
import torch
from glassnet.data import load, validation_split
import bench_train

torch.set_num_threads({threads})
x_train, y_train = load("fashion-mnist", "train")
x_test, y_test = load("fashion-mnist", "test")
(x_tr, y_tr), (x_val, y_val) = validation_split(x_train, y_train, 0.1)
data = (x_tr, y_tr.astype(np.int64), x_val, y_val.astype(np.int64), x_test, y_test.astype(np.int64))
bench_train.train_torch(torch, data, {epochs}, 128, 0)
"""


def glassnet_command() -> str:
    """The ``glassnet`` script installed beside this Python (or on PATH)."""
    beside = Path(sys.executable).with_name("glassnet")
    return str(beside) if beside.exists() else shutil.which("glassnet") or "glassnet"


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a command run to its exit."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed with exit code {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_train import cpu_description

    print(f"cpu: {cpu_description()}, {os.cpu_count()} cores; {args.threads} threads each")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as out:
        ours = peak_rss(
            [glassnet_command(), "train", "--dataset", "fashion-mnist",
             "--epochs", str(args.epochs), "--out", out, "--quiet"],
            env,
        )  # fmt: skip
    code = TORCH_SIDE.format(here=str(HERE), threads=args.threads, epochs=args.epochs)
    theirs = peak_rss([sys.executable, "-c", code], env)
    print(f"{'':10s} {'peak RSS':>10s} {'seconds':>8s}")
    print(f"{'glassnet':10s} {ours[0]:8.0f} MB {ours[1]:8.1f}")
    print(f"{'pytorch':10s} {theirs[0]:8.0f} MB {theirs[1]:8.1f}")
    print(f"glassnet / pytorch peak RSS: {ours[0] / theirs[0]:.2f}")


if __name__ == "__main__":
    main()
