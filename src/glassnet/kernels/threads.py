"""How the kernels use several cores: serial Numba loops, run on slices of the work by threads.

Every kernel is compiled serial and ``nogil`` and takes the range of its outermost loop
(``first``, ``last``: images of a batch, rows of a matrix). :func:`parallel_for` cuts that
loop into one range per thread; the calling thread runs the first, a small pool the others,
and the call returns when all are done.

Why not Numba's ``parallel=True`` / ``prange``: a parallel loop nest takes Numba 2-8 s to
compile (its parfor passes), a serial one 0.2-1 s, and a first run compiles every kernel it
uses. The pool's threads sleep on a queue between kernels, so they leave the cores to
NumPy's BLAS threads, which run between the kernels of a training step.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from glassnet._environment import available_cores, local_processes
from glassnet.kernels import first_run

# Below this many elements of work per thread a second thread costs more than it saves
# (a hand-over to the pool and back is ~20-50 microseconds).
MIN_WORK_PER_THREAD = 1 << 15


def _default_threads() -> int:
    """NUMBA_NUM_THREADS or OMP_NUM_THREADS when set to a positive integer, else the cores
    this process may run on, shared with the other processes an MPI launcher started on
    this machine (see :mod:`glassnet._environment`)."""
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, available_cores() // local_processes(os.environ))


_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_owner = (0, 0)  # (pid, threads) the pool was made for: a forked child makes its own
_lock = threading.Lock()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in glassnet's kernels (default: the cores this process may run on,
    or NUMBA_NUM_THREADS / OMP_NUM_THREADS when set). Matrix products follow NumPy's BLAS
    settings (OPENBLAS_NUM_THREADS)."""
    global _threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} threads must be an integer >= 1")
    _threads = n


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return _threads


def _get_pool() -> ThreadPoolExecutor:
    global _pool, _pool_owner
    owner = (os.getpid(), _threads)
    with _lock:
        if _pool is None or _pool_owner != owner:
            if _pool is not None and _pool_owner[0] == owner[0]:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(_threads - 1, thread_name_prefix="glassnet-kernel")
            _pool_owner = owner
    return _pool


def parallel_for(kernel: Callable[..., Any], n: int, *args: Any, work: int | None = None) -> None:
    """``kernel(*args, first, last)`` over ``range(n)`` cut into contiguous ranges, one per
    thread: at most :func:`get_num_threads`, and fewer when ``work`` (the elements the whole
    call touches, default n) gives each less than MIN_WORK_PER_THREAD."""
    if kernel not in first_run.ready:
        first_run.prepare(kernel, args)
    work = n if work is None else work
    threads = max(1, min(_threads, n, work // MIN_WORK_PER_THREAD))
    if threads == 1:
        kernel(*args, 0, n)
        return
    bounds = [n * t // threads for t in range(threads + 1)]
    pool = _get_pool()
    futures: list[Future] = [
        pool.submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(1, threads)
    ]
    try:
        kernel(*args, bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()
