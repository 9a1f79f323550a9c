"""Every speed number glassnet tracks, against PyTorch CPU and the memory bound, in one run.

Run:  python benchmarks/bench_all.py [--threads 2] [--quick] [--blas-kernels cpu|environment]

1. cross-entropy forward + backward (and in place) against PyTorch and numpy.copyto,
2. the fused gradient against the Jacobian route,
3. LinearCrossEntropy against Linear + CrossEntropyLoss (time and peak memory),
4. the seeds' convnet: training (batch 128, forward + backward + Adam) and inference
   (batch 1000) throughput against PyTorch with the same threads,
5. the kernels' first-call compile time.
Accuracy over full training runs is bench_train.py's job (it takes minutes per epoch).
"""

from __future__ import annotations

import glassnet  # noqa: F401  # isort: skip  (first: it sets OpenBLAS's environment, see README)

import argparse
import os

import bench_cross_entropy as ce
import bench_train as tr
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke test)")
    parser.add_argument(
        "--blas-kernels", choices=["cpu", "environment"], default="cpu", help=tr.BLAS_KERNELS_HELP
    )
    args = parser.parse_args()
    tr.use_cpu_blas_kernels(args.blas_kernels)

    import torch

    from glassnet.kernels import set_num_threads
    from glassnet.memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    keep_freed_memory()
    from bench_train import cpu_description

    print(
        f"cpu: {cpu_description()}, {os.cpu_count()} cores; numpy {np.__version__}, "
        f"{tr.blas_description()}; torch {torch.__version__}; {args.threads} threads\n"
    )
    ce.bench_shapes(ce.SHAPES[:2] if args.quick else ce.SHAPES, args.repeat)
    ce.bench_jacobian(args.repeat, n=32 if args.quick else 256)
    if args.quick:
        ce.bench_linear_cross_entropy(256, 64, 4000, args.repeat)
    else:
        ce.bench_linear_cross_entropy(4096, 512, 128000, 2)

    rng = np.random.default_rng(0)  # throughput does not depend on the pixels
    x = rng.random((1000, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=1000)
    print("\nthe seeds' convnet, images per second (higher is better)")
    for name, numbers in tr.measure_throughput(torch, x, y).items():
        ratio = numbers["glassnet"] / numbers["pytorch"]
        print(
            f"  {name:24} glassnet {numbers['glassnet']:>7,.0f}  pytorch "
            f"{numbers['pytorch']:>7,.0f}  glassnet/pytorch {ratio:.2f}x"
        )
    if not args.quick:
        cold, warm = ce.compile_seconds()
        print(
            "\nimport + the convnet's first training step and inference in a new process: "
            f"{cold:.1f}s with an empty kernel cache (compiling), {warm:.1f}s from the cache"
        )


if __name__ == "__main__":
    main()
