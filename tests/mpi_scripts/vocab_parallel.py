"""VocabParallelLinearCrossEntropy on every rank against LinearCrossEntropy on the full weight.

python vocab_parallel.py OUT.json; under mpiexec. Rank 0 writes the largest relative errors of
the loss, dL/dx and this rank's rows of dL/dW over a grid of options, and every rank's peak
memory (tracemalloc) of one forward and backward with C = 50,000.
"""

import json
import sys
import tracemalloc

import numpy as np

from glassnet.distributed import VocabParallelLinearCrossEntropy, world
from glassnet.nn import LinearCrossEntropy

comm = world()


def elementwise(a, b):
    """max |a - b| / |b| over the entries (float64 runs: no ulp of float32 logits to hide)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if b.size else 0.0


def relative(a, b):
    """||a - b|| / ||b||: float32 logits of a (C_r, D) shard and of the (C, D) matrix may
    differ by an ulp (BLAS blocks by shape), so single entries of p differ by ~1e-6."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) if b.size else 0.0


def compare(n, d, c, options, bias=False, chunk_size=None, dtype=np.float32, error=relative):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, d)).astype(dtype)
    target = rng.integers(0, c, size=n)
    target[::5] = -1  # ignored where ignore_index=-1
    full = LinearCrossEntropy(d, c, bias, rng=np.random.default_rng(8), dtype=dtype, **options)
    if bias:
        full.bias.data[...] = rng.normal(size=c)
    loss = full(x, target)
    grad_x = full.backward()
    part = VocabParallelLinearCrossEntropy(
        d, c, bias, chunk_size=chunk_size, dtype=dtype, **options
    )
    part.load_full_weight(full.weight.data, None if not bias else full.bias.data)
    rows = slice(part.classes.start, part.classes.stop)
    part_loss = part(x, target)
    part_grad_x = part.backward()
    errors = [
        error(part_loss, loss),
        error(part_grad_x, grad_x),
        error(part.weight.grad, full.weight.grad[rows]),
    ]
    return comm.allreduce(np.array(errors), "max")


c_small = 1000
weights = np.random.default_rng(3).uniform(0.5, 2.0, size=c_small).astype(np.float32)
grid = {}
for reduction in ("mean", "sum", "none"):
    for smoothing in (0.0, 0.1):
        for weight in (None, weights):
            options = {
                "reduction": reduction,
                "label_smoothing": smoothing,
                "weight": weight,
                "ignore_index": -1,
            }
            key = f"{reduction}, smoothing {smoothing}, weight {weight is not None}"
            grid[key] = compare(37, 16, c_small, options, bias=True, chunk_size=10).tolist()

errors = compare(64, 128, 50_000, {"ignore_index": -1}).tolist()  # C = 50,000: the acceptance case
# The same in float64, entry by entry.
errors64 = compare(
    64, 128, 50_000, {"ignore_index": -1}, dtype=np.float64, error=elementwise
).tolist()
# Peak memory of one forward and backward on this rank (weight shard and its gradient incl.).
rng = np.random.default_rng(9)
x = rng.normal(size=(64, 128)).astype(np.float32)
target = rng.integers(0, 50_000, size=64)
tracemalloc.start()
part = VocabParallelLinearCrossEntropy(128, 50_000, rng=np.random.default_rng(1))
part(x, target)
part.backward()
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
peaks = comm.allgather_object(peak)
if comm.rank == 0:
    with open(sys.argv[1], "w") as f:
        report = {"grid": grid, "errors_50k": errors, "errors_50k_float64": errors64}
        json.dump({**report, "peak_bytes": peaks}, f)
