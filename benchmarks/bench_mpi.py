"""Data-parallel training over MPI: images/s with 1 and 2 processes, allreduce time per step.

Run:  python benchmarks/bench_mpi.py [--steps 200] [--processes 1 2] [--json PATH]
Quick check:  python benchmarks/bench_mpi.py --steps 20

For the seeds' convnet (``glassnet.nn.convnet``) and the BatchNorm model
``examples/bn_convnet.json`` (per-process BatchNorm statistics), each on synthetic 28 x 28
images with Adam and a global batch of 128: it starts ``mpiexec -n P python bench_mpi.py
--worker ...`` for every P, each process with ``--threads`` threads (default 1: P processes
on P cores against one on one core; threads beyond the free cores slow every process down),
and times the steps after the first (which compiles and fills caches). The allreduce
time includes waiting for the slowest rank. Last, a scaling model for 2-64 machines: compute
per step (measured, one process) divided by the machines, plus a ring allreduce of the
gradient bytes over a 10, 25 or 100 Gb/s link (2 (M - 1) / M of the bytes, 50 us per hop).
"""

from __future__ import annotations

import glassnet  # noqa: F401  # isort: skip  (first: it sets OpenBLAS's environment, see README)

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bn_convnet.json"
MODELS = ("convnet", "bn_convnet")
LINKS_GBPS = (10, 25, 100)
MACHINES = (2, 4, 8, 16, 32, 64)
HOP_SECONDS = 50e-6
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def cpu_description() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train import cpu_description as describe

    return describe()


def build_model(name: str, rng: np.random.Generator):
    from glassnet.model_file import build
    from glassnet.nn import convnet

    if name == "convnet":
        return convnet(10, 1, 28, rng=rng)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_bn import seeded_copy

    return seeded_copy(build(json.loads(EXAMPLE.read_text())), rng)


def worker(name: str, steps: int, batch_size: int, out: str) -> None:
    """One rank's run; rank 0 writes the timings to ``out``."""
    from glassnet.distributed import DataParallel
    from glassnet.memory import keep_freed_memory
    from glassnet.optim import Adam
    from glassnet.train import fit
    from glassnet.train.callbacks import Callback

    keep_freed_memory()
    rng = np.random.default_rng(0)
    n = steps * batch_size
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n)
    model = build_model(name, np.random.default_rng(1))
    parallel = DataParallel()

    class Clock(Callback):
        def on_train_batch_end(self, batch, logs):
            if batch == 0:
                self.start, self.allreduce_start = time.perf_counter(), parallel.allreduce_seconds
            self.end = time.perf_counter()

    clock = Clock()
    fit(
        model, (x, y), optimizer=Adam(model.parameters(), lr=1e-3), epochs=1,
        batch_size=batch_size, verbose=0, callbacks=[clock], distributed=parallel,
    )  # fmt: skip
    timed = steps - 1
    seconds = (clock.end - clock.start) / timed
    allreduce = (parallel.allreduce_seconds - clock.allreduce_start) / timed
    if parallel.is_main:
        params = sum(p.data.size for p in model.parameters())
        result = {
            "model": name,
            "processes": parallel.size,
            "images_per_second": batch_size / seconds,
            "step_seconds": seconds,
            "allreduce_seconds": allreduce,
            "allreduce_bytes": (params + 3) * 4,
            "parameters": params,
        }
        Path(out).write_text(json.dumps(result))


def launch(name: str, processes: int, steps: int, batch_size: int, threads: int) -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    out = Path(f".bench_mpi_{os.getpid()}_{name}_{processes}.json")
    env = os.environ | {name: str(threads) for name in THREAD_VARIABLES}
    command = [mpiexec, "-n", str(processes), sys.executable, __file__, "--worker", name]
    command += ["--steps", str(steps), "--batch-size", str(batch_size), "--out", str(out)]
    subprocess.run(command, check=True, env=env)
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def scaling_table(result: dict) -> list[str]:
    """Modelled speed-up over one machine for M machines and each link speed."""
    compute = result["step_seconds"] - result["allreduce_seconds"]
    lines = [
        f"{result['model']}: compute {compute * 1e3:.1f} ms per step of "
        f"{result['images_per_second'] * result['step_seconds']:.0f} images on one machine, "
        f"{result['allreduce_bytes'] / 1e3:.0f} kB allreduced per step",
        "| machines | " + " | ".join(f"{g} Gb/s" for g in LINKS_GBPS) + " |",
        "|---:|" + "---:|" * len(LINKS_GBPS),
    ]
    for machines in MACHINES:
        cells = []
        for gbps in LINKS_GBPS:
            ring = 2 * (machines - 1) / machines * result["allreduce_bytes"] * 8 / (gbps * 1e9)
            ring += 2 * (machines - 1) * HOP_SECONDS
            speedup = compute / (compute / machines + ring)
            cells.append(f"{speedup:.1f}x ({speedup / machines:.0%})")
        lines.append(f"| {machines} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per run (the first untimed)")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.worker:
        worker(args.worker, args.steps, args.batch_size, args.out)
        return
    print(f"CPU: {cpu_description()}; {os.cpu_count()} cores, {args.threads} thread(s) per process")
    results = []
    for name in args.models:
        for processes in args.processes:
            result = launch(name, processes, args.steps, args.batch_size, args.threads)
            results.append(result)
            print(
                f"{name:>10}, {processes} process(es): {result['images_per_second']:7.0f} "
                f"images/s, step {result['step_seconds'] * 1e3:6.1f} ms, allreduce "
                f"{result['allreduce_seconds'] * 1e3:5.2f} ms ({result['allreduce_bytes']} bytes)"
            )
    print("\nScaling model (speed-up over one machine, and its efficiency):")
    for result in results:
        if result["processes"] == 1:
            print("\n".join(scaling_table(result)) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "runs": results}))


if __name__ == "__main__":
    main()
