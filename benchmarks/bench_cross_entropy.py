"""Cross-entropy forward + backward: glassnet vs PyTorch CPU vs the memory bound, side by side.

Run:  python benchmarks/bench_cross_entropy.py [--threads 2] [--repeat 5] [--quick]

For each float32 (N, C) it times, in one process and on the same array:
  glassnet    nn.CrossEntropyLoss forward + backward (index targets, mean), and the in-place
              variant (the gradient written into the logits)
  pytorch     F.cross_entropy(x, y).backward()
  copyto      numpy.copyto of the logits: one read and one write, the memory bound
and prints the ratios and the extra memory each glassnet variant allocates (tracemalloc). It
then times the fused gradient against the Jacobian route, and LinearCrossEntropy against
Linear + CrossEntropyLoss (time and peak memory). Times are medians after three warm-up calls.
"""

from __future__ import annotations

import glassnet  # noqa: F401  # isort: skip  (first: it sets OpenBLAS's environment, see README)

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

SHAPES = [(128, 10), (4096, 1000), (4096, 32000), (1024, 128000)]
JACOBIAN_CLASSES = [10, 100, 1000]


def median_times(fns, repeat: int, warmup: int = 3, min_sample: float = 0.005) -> list[float]:
    """Median seconds per call of each function, sampled round-robin (a slow phase of a busy
    machine then hits all of them alike). A sample of a fast call loops it until it lasts
    ``min_sample`` seconds, so that timer noise does not decide a 40 us comparison."""
    loops = []
    for fn in fns:
        for _ in range(warmup):  # PyTorch's allocator and thread pool need a few calls to settle
            fn()
        start = time.perf_counter()
        fn()
        loops.append(max(1, int(min_sample / max(time.perf_counter() - start, 1e-9))))
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, calls, samples in zip(fns, loops, times, strict=True):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - start) / calls)
    return [float(np.median(samples)) for samples in times]


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_shapes(shapes, repeat: int) -> None:
    import torch

    from glassnet.nn import CrossEntropyLoss

    print(
        f"{'N x C':>15} {'glassnet':>10} {'in place':>10} {'pytorch':>10} {'copyto':>9} "
        f"{'torch/ours':>11} {'ours/copy':>10} {'inpl/copy':>10} {'extra MB':>9} {'inpl MB':>8}"
    )
    rng = np.random.default_rng(0)
    for n, c in shapes:
        logits = rng.standard_normal((n, c), dtype=np.float32)
        scratch = logits.copy()
        target = rng.integers(0, c, size=n)
        # as the training loop uses it: the gradient buffer is lent back each step
        loss_fn = CrossEntropyLoss(reuse_gradient=True)
        inplace_fn = CrossEntropyLoss(inplace=True)

        def ours():
            loss_fn(logits, target)
            loss_fn.backward()

        def ours_inplace():
            inplace_fn(scratch, target)  # scratch holds the gradient afterwards
            inplace_fn.backward()

        x = torch.from_numpy(logits).requires_grad_()
        y = torch.from_numpy(target)

        def theirs():
            x.grad = None
            torch.nn.functional.cross_entropy(x, y).backward()

        dst = np.empty_like(logits)
        t_ours, t_inplace, t_torch, t_copy = median_times(
            [ours, ours_inplace, theirs, lambda: np.copyto(dst, logits)], repeat
        )
        mb_ours, mb_inplace = peak_bytes(ours) / 2**20, peak_bytes(ours_inplace) / 2**20
        print(
            f"{f'{n} x {c}':>15} {t_ours * 1e3:>8.2f}ms {t_inplace * 1e3:>8.2f}ms "
            f"{t_torch * 1e3:>8.2f}ms {t_copy * 1e3:>7.2f}ms {t_torch / t_ours:>10.2f}x "
            f"{t_ours / t_copy:>9.2f}x {t_inplace / t_copy:>9.2f}x {mb_ours:>9.1f} "
            f"{mb_inplace:>8.2f}"
        )


def bench_jacobian(repeat: int, n: int = 256) -> None:
    from glassnet.functional import cross_entropy_backward, cross_entropy_backward_jacobian

    print(f"\nfused p - y versus the Jacobian route, float64, N = {n}")
    print(f"{'C':>6} {'fused':>10} {'jacobian':>10} {'jacobian/fused':>15}")
    rng = np.random.default_rng(1)
    for c in JACOBIAN_CLASSES:
        logits = rng.standard_normal((n, c))
        target = rng.integers(0, c, size=n)
        t_fused, t_jac = median_times(
            [
                lambda: cross_entropy_backward(logits, target),
                lambda: cross_entropy_backward_jacobian(logits, target),
            ],
            repeat,
        )
        print(f"{c:>6} {t_fused * 1e3:>8.3f}ms {t_jac * 1e3:>8.3f}ms {t_jac / t_fused:>14.1f}x")


def bench_linear_cross_entropy(n: int, d: int, c: int, repeat: int) -> None:
    from glassnet.nn import CrossEntropyLoss, Linear, LinearCrossEntropy

    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, d), dtype=np.float32)
    target = rng.integers(0, c, size=n)
    fused = LinearCrossEntropy(d, c, rng=np.random.default_rng(3))
    linear = Linear(d, c, bias=False, rng=np.random.default_rng(3))
    loss_fn = CrossEntropyLoss(reuse_gradient=True)

    def unfused_step():
        linear.zero_grad()
        loss = loss_fn(linear(x), target)
        return loss, linear.backward(loss_fn.backward())

    def fused_step():
        fused.zero_grad()
        loss = fused(x, target)
        return loss, fused.backward()

    (loss_a, gx_a), (loss_b, gx_b) = unfused_step(), fused_step()
    t_unfused, t_fused = median_times([unfused_step, fused_step], repeat)
    m_unfused, m_fused = peak_bytes(unfused_step), peak_bytes(fused_step)
    err = float(np.max(np.abs(gx_a - gx_b)) / np.max(np.abs(gx_a)))
    print(f"\nLinearCrossEntropy, N={n}, D={d}, C={c} (forward + backward, float32)")
    print(
        f"  unfused Linear + CrossEntropyLoss: {t_unfused:7.2f}s, peak {m_unfused / 2**20:8.1f} MB"
    )
    print(f"  LinearCrossEntropy (chunked):      {t_fused:7.2f}s, peak {m_fused / 2**20:8.1f} MB")
    print(
        f"  time ratio {t_fused / t_unfused:.2f}x, memory ratio 1/{m_unfused / m_fused:.1f}; "
        f"loss {float(loss_a):.6f} vs {float(loss_b):.6f}, max rel. difference of dL/dx {err:.1e}"
    )


def compile_seconds() -> tuple[float, float]:
    """Seconds to import glassnet, run the convnet's first training step (cross-entropy,
    convolution, pooling and ReLU kernels) and first inference in a fresh process: with an
    empty Numba cache (everything compiles), then again with the cache that run filled."""
    code = (
        "import time\n"
        "start = time.perf_counter()\n"
        "import glassnet, numpy as np\n"
        "from glassnet.nn import CrossEntropyLoss, convnet\n"
        "model, f = convnet(), CrossEntropyLoss()\n"
        "x = np.zeros((8, 1, 28, 28), np.float32); y = np.zeros(8, np.int64)\n"
        "f(model(x), y); model.backward(f.backward(), need_input_grad=False)\n"
        "model.eval(); model(x)\n"
        "print(time.perf_counter() - start)\n"
    )
    seconds = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(2):
            run = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            seconds.append(float(run.stdout.strip()))
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and glassnet")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke test)")
    args = parser.parse_args()

    import torch
    from bench_train import cpu_description

    from glassnet.kernels import get_num_threads, set_num_threads

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    print(
        f"cpu: {cpu_description()}, {os.cpu_count()} cores; "
        f"numpy {np.__version__}, torch {torch.__version__}; {args.threads} threads "
        f"(glassnet kernels: {get_num_threads()})\n"
    )
    shapes = SHAPES[:2] if args.quick else SHAPES
    bench_shapes(shapes, args.repeat)
    bench_jacobian(args.repeat, n=32 if args.quick else 256)
    if args.quick:
        bench_linear_cross_entropy(256, 64, 4000, args.repeat)
    else:
        bench_linear_cross_entropy(4096, 512, 128000, 2)
        cold, warm = compile_seconds()
        print(f"\nfirst convnet step in a new process: {cold:.1f}s compiling, {warm:.1f}s cached")


if __name__ == "__main__":
    main()
