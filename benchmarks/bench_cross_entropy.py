"""Cross-entropy forward + backward: glassnet vs PyTorch CPU vs the memory bound, side by side.

Run:  python benchmarks/bench_cross_entropy.py [--threads 2] [--repeat 5] [--quick]

For each float32 (N, C) it times, in one process and on the same array:
  glassnet    nn.CrossEntropyLoss forward + backward (index targets, mean)
  pytorch     F.cross_entropy(x, y).backward()
  copyto      numpy.copyto of the logits: one read and one write, the memory bound
and prints the ratios. It then times the fused gradient against the Jacobian route.
Times are the median of --repeat runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

SHAPES = [(128, 10), (4096, 1000), (4096, 32000), (1024, 128000)]
JACOBIAN_CLASSES = [10, 100, 1000]


def median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_shapes(shapes, repeat: int) -> None:
    import torch

    from glassnet.nn import CrossEntropyLoss

    print(
        f"{'N x C':>15} {'glassnet':>10} {'pytorch':>10} {'copyto':>10} "
        f"{'torch/glassnet':>15} {'glassnet/copyto':>16}"
    )
    rng = np.random.default_rng(0)
    for n, c in shapes:
        logits = rng.standard_normal((n, c), dtype=np.float32)
        target = rng.integers(0, c, size=n)
        loss_fn = CrossEntropyLoss()

        def ours():
            loss_fn(logits, target)
            loss_fn.backward()

        x = torch.from_numpy(logits).requires_grad_()
        y = torch.from_numpy(target)

        def theirs():
            x.grad = None
            torch.nn.functional.cross_entropy(x, y).backward()

        dst = np.empty_like(logits)
        t_ours = median_time(ours, repeat)
        t_torch = median_time(theirs, repeat)
        t_copy = median_time(lambda: np.copyto(dst, logits), repeat)
        print(
            f"{f'{n} x {c}':>15} {t_ours * 1e3:>8.2f}ms {t_torch * 1e3:>8.2f}ms "
            f"{t_copy * 1e3:>8.2f}ms {t_torch / t_ours:>14.2f}x {t_ours / t_copy:>15.2f}x"
        )


def bench_jacobian(repeat: int, n: int = 256) -> None:
    from glassnet.functional import cross_entropy_backward, cross_entropy_backward_jacobian

    print(f"\nfused p - y versus the Jacobian route, float64, N = {n}")
    print(f"{'C':>6} {'fused':>10} {'jacobian':>10} {'jacobian/fused':>15}")
    rng = np.random.default_rng(1)
    for c in JACOBIAN_CLASSES:
        logits = rng.standard_normal((n, c))
        target = rng.integers(0, c, size=n)
        t_fused = median_time(lambda: cross_entropy_backward(logits, target), repeat)
        t_jac = median_time(lambda: cross_entropy_backward_jacobian(logits, target), repeat)
        print(f"{c:>6} {t_fused * 1e3:>8.3f}ms {t_jac * 1e3:>8.3f}ms {t_jac / t_fused:>14.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch (and BLAS)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke test)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"numpy {np.__version__}, torch {torch.__version__} ({args.threads} threads)\n"
    )
    shapes = SHAPES[:2] if args.quick else SHAPES
    bench_shapes(shapes, args.repeat)
    bench_jacobian(args.repeat, n=32 if args.quick else 256)


if __name__ == "__main__":
    main()
