"""Data parallelism: every rank runs the same step on its slice of each global batch.

Horovod's recipe (``horovod/torch/optimizer.py``): rank 0's initial state is broadcast; each
step every rank computes the gradient of its slice, and one allreduce over a single flat buffer
(tensor fusion) sums them. fit (:mod:`glassnet.train.loop`) calls this module; the step itself
does not change.

Exactness: a mean loss over the global batch is sum(S_r) / sum(D_r), where rank r's slice has
the summed loss S_r and the denominator D_r (its samples, or the weight of its counted targets
with ignore_index and class weights: the loss's ``denominator``). Each rank backpropagates the
gradient of S_r (``loss_fn.backward(D_r)``); one allreduce adds them with the D_r, and the sum
is divided by sum(D_r): the gradient of the global mean, for uneven slices, last batches and
targets ignored or weighted unevenly over the ranks. (PyTorch's DDP averages the ranks'
means, which is this only when every D_r is in proportion to the slice.) Dropout draws its
mask for the whole global batch from the shared Generator and uses its slice, so P processes
take the same steps as one; the weights then agree within the round-off of the summation
order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from glassnet.distributed.comm import DEFAULT_TIMEOUT, SingleProcess, world
from glassnet.distributed.sync_batchnorm import convert_sync_batchnorm, revert_sync_batchnorm
from glassnet.nn import Module
from glassnet.nn.layers import Dropout
from glassnet.nn.module import Parameter


class StepTotals(NamedTuple):
    """The step's statistics that travel with the gradients, summed over the ranks."""

    loss_sum: float  # of the ranks' summed losses (their mean times their denominator)
    denominator: float  # of the mean losses' denominators
    correct: int  # correctly classified samples
    classified: int  # samples whose target names a class (not an ignore_index)
    stop: bool  # a stop (Ctrl-C) requested on any rank


_STATS = len(StepTotals._fields)


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """This rank's rows [lo, hi) of n: slices differ by at most one, lower ranks get more."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class _GlobalBatchGenerator(np.random.Generator):
    """A Dropout Generator that draws the mask of the whole global batch and returns this
    rank's rows, so the random stream advances as in one process. Shares ``bit_generator``
    with the Generator it replaces."""

    rows: tuple[int, int, int] | None = None  # (lo, hi, global n) during a training step

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        rows = self.rows
        if rows is None or out is not None or not isinstance(size, tuple) or not size:
            return super().random(size, dtype=dtype, out=out)
        lo, hi, n = rows
        if size[0] != hi - lo:
            return super().random(size, dtype=dtype, out=out)
        return super().random((n, *size[1:]), dtype=dtype)[lo:hi]


class DataParallel:
    """Data-parallel training over the processes of ``mpiexec``: ``fit(..., distributed=...)``.

    Args:
        sync_batchnorm: BatchNorm layers normalise with the statistics of the whole global
            batch (two allreduces per layer forward, one backward), as one process would;
            default False: each rank's own slice, as Horovod and PyTorch DDP do.
        timeout: seconds a collective waits for the other ranks before the job is ended.
    """

    def __init__(self, *, sync_batchnorm: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.comm: SingleProcess = world(timeout)
        self.rank, self.size = self.comm.rank, self.comm.size
        self.sync_batchnorm = bool(sync_batchnorm)
        self._flat: np.ndarray | None = None
        self._generators: list[_GlobalBatchGenerator] = []
        self.allreduce_seconds = 0.0  # summed over steps (benchmarks read it)
        if self.size > 1:
            self.comm.peers()  # gathered now: a failure report names ranks by their pids

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """One line naming every rank's process, so a launcher's "pid 1234" can be traced."""
        peers = enumerate(self.comm.peers())
        ranks = ", ".join(f"{rank}: pid {pid} on {host}" for rank, (host, pid) in peers)
        return f"Data-parallel training on {self.size} processes (rank {ranks})"

    def shard(self, n: int) -> tuple[int, int]:
        return shard_bounds(n, self.rank, self.size)

    # --- the state every rank must share ------------------------------------------------------

    def broadcast_model(self, model: Module) -> None:
        """Rank 0's parameters and buffers on every rank, one flat buffer per dtype."""
        arrays = [p.data for p in model.parameters()]
        arrays += [b for b in model.buffers() if isinstance(b, np.ndarray)]
        for dtype in sorted({a.dtype.str for a in arrays}):
            group = [a for a in arrays if a.dtype.str == dtype]
            flat = np.concatenate([a.ravel() for a in group]) if group else np.zeros(0)
            self.comm.broadcast(flat, "the initial weights' broadcast")
            offset = 0
            for array in group:
                array[...] = flat[offset : offset + array.size].reshape(array.shape)
                offset += array.size

    def broadcast_object(self, value: Any, what: str = "broadcast") -> Any:
        return self.comm.broadcast_object(value, what)

    def allreduce(self, buffer: np.ndarray, op: str = "sum", what: str = "allreduce") -> np.ndarray:
        return self.comm.allreduce(buffer, op, what)

    # --- the step -----------------------------------------------------------------------------

    def set_rows(self, lo: int, hi: int, n: int) -> None:
        """This step's slice [lo, hi) of a global batch of n, for Dropout's masks."""
        for generator in self._generators:
            generator.rows = (lo, hi, n)

    def reduce_step(
        self,
        params: Sequence[Parameter],
        *,
        loss_sum: float,
        denominator: float,
        correct: int,
        classified: int,
        stop: bool,
        step: int,
        mean: bool = True,
    ) -> StepTotals:
        """Sum the ranks' gradients and the step's statistics in one allreduce.

        The gradients are those of each rank's summed loss; with ``mean`` the sum is divided
        by the summed ``denominator`` as it is copied back (by nothing if that is 0: nothing
        was counted, every gradient is 0).
        """
        for generator in self._generators:
            generator.rows = None
        total = sum(p.grad.size for p in params)
        if self._flat is None or self._flat.size != total + _STATS:
            dtype = np.result_type(*(p.grad.dtype for p in params)) if params else np.float64
            self._flat = np.empty(total + _STATS, dtype=dtype)
        flat, offset = self._flat, 0
        for p in params:
            flat[offset : offset + p.grad.size] = p.grad.ravel()
            offset += p.grad.size
        flat[offset:] = (loss_sum, denominator, correct, classified, float(stop))
        started = time.perf_counter()
        self.comm.allreduce(flat, "sum", f"the gradient allreduce of step {step + 1}")
        self.allreduce_seconds += time.perf_counter() - started
        totals = StepTotals(
            float(flat[offset]), float(flat[offset + 1]), round(float(flat[offset + 2])),
            round(float(flat[offset + 3])), bool(flat[offset + 4]),
        )  # fmt: skip
        scale = 1.0 / totals.denominator if mean and totals.denominator else 1.0
        offset = 0
        for p in params:
            np.multiply(
                flat[offset : offset + p.grad.size].reshape(p.grad.shape), scale, out=p.grad
            )
            offset += p.grad.size
        return totals

    def share_generators(self, model: Module) -> None:
        """Rank 0's Dropout Generator states on every rank (after a step where some rank had
        no samples and so drew nothing)."""
        states = self.broadcast_object(
            [g.bit_generator.state for g in self._generators], "the Dropout generators' broadcast"
        )
        for generator, state in zip(self._generators, states, strict=True):
            generator.bit_generator.state = state

    @contextmanager
    def running(self, model: Module) -> Iterator[None]:
        """For the run: Dropout draws global-batch masks; BatchNorm syncs if asked. Undone after."""
        replaced: list[tuple[Dropout, np.random.Generator]] = []
        wrapped: dict[int, _GlobalBatchGenerator] = {}
        for module in model.modules():
            if isinstance(module, Dropout) and isinstance(module.rng, np.random.Generator):
                original = module.rng
                if id(original) not in wrapped:
                    wrapped[id(original)] = _GlobalBatchGenerator(original.bit_generator)
                replaced.append((module, original))
                module.rng = wrapped[id(original)]
        self._generators = list(wrapped.values())
        converted = convert_sync_batchnorm(model, self.comm) if self.sync_batchnorm else []
        try:
            yield
        finally:
            revert_sync_batchnorm(converted)
            for module, original in replaced:
                module.rng = original
            self._generators = []

    @contextmanager
    def plain_model(self, model: Module) -> Iterator[None]:
        """The model with its plain BatchNorm classes, e.g. while its architecture is saved."""
        converted = [
            (module, type(module))
            for module in model.modules()
            if getattr(type(module), "plain_class", None) is not None
        ]
        for module, cls in converted:
            module.__class__ = cls.plain_class
        try:
            yield
        finally:
            for module, cls in converted:
                module.__class__ = cls

    def fail(self, summary: str) -> None:
        """After an exception during the run: end every rank (rank 0 names this one)."""
        if self.size > 1:
            self.comm.fail(summary)
