"""The kernels' threads (glassnet.kernels.threads): ranges, thread counts, results that do not
depend on them, and a pool that survives fork."""

import os
import threading

import numpy as np
import pytest

from glassnet import kernels
from glassnet.kernels import threads


@pytest.fixture
def thread_count():
    """Restore the thread count a test changes."""
    saved = kernels.get_num_threads()
    yield
    kernels.set_num_threads(saved)


def _record(calls, lock):
    def kernel(tag, first, last):
        with lock:
            calls.append((tag, first, last, threading.current_thread().name))

    return kernel


@pytest.mark.parametrize("n, work, threads_wanted, ranges", [
    (10, 10, 4, 1),  # too little work: one range, on the calling thread
    (10, 10 * threads.MIN_WORK_PER_THREAD, 4, 4),
    (3, 10 * threads.MIN_WORK_PER_THREAD, 4, 3),  # never more ranges than items
    (0, 0, 4, 1),
])  # fmt: skip
def test_parallel_for_covers_the_range_once(thread_count, n, work, threads_wanted, ranges):
    kernels.set_num_threads(threads_wanted)
    calls, lock = [], threading.Lock()
    threads.parallel_for(_record(calls, lock), n, "tag", work=work)
    assert len(calls) == ranges
    covered = sorted(i for _, first, last, _ in calls for i in range(first, last))
    assert covered == list(range(n))
    assert all(tag == "tag" for tag, *_ in calls)
    names = {name for *_, name in calls}
    assert threading.current_thread().name in names  # the caller takes the first range
    if ranges > 1:
        assert any(name.startswith("glassnet-kernel") for name in names)


def test_set_num_threads_validates(thread_count):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            kernels.set_num_threads(bad)
    kernels.set_num_threads(3)
    assert kernels.get_num_threads() == 3


def test_an_exception_in_a_range_reaches_the_caller(thread_count):
    kernels.set_num_threads(2)

    def kernel(first, last):
        if first > 0:
            raise RuntimeError(f"range {first}-{last} failed")

    with pytest.raises(RuntimeError, match="range 5-10 failed"):
        threads.parallel_for(kernel, 10, work=10 * threads.MIN_WORK_PER_THREAD)


@pytest.mark.skipif(not kernels.enabled(), reason="the Numba kernels are off")
def test_kernel_results_do_not_depend_on_the_thread_count(thread_count):
    from glassnet.functional.conv import conv2d_backward, im2col
    from glassnet.functional.normalization import batch_norm_backward, batch_norm_forward

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 12, 12), dtype=np.float32)
    weight = rng.standard_normal((4, 8, 3, 3), dtype=np.float32)
    grad = rng.standard_normal((16, 4, 12, 12), dtype=np.float32)
    results = []
    for n in (1, 2, 3):
        kernels.set_num_threads(n)
        y, cache = batch_norm_forward(x, training=True)
        cols = im2col(x, (3, 3), padding=1)
        results.append((y, *batch_norm_backward(x, cache), cols,
                        *conv2d_backward(grad, x, weight, padding=1)))  # fmt: skip
    for outputs in zip(*results, strict=True):
        for other in outputs[1:]:
            np.testing.assert_array_equal(other, outputs[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool(thread_count):
    kernels.set_num_threads(2)
    work = 10 * threads.MIN_WORK_PER_THREAD
    threads.parallel_for(lambda first, last: None, 4, work=work)  # the parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool threads do not exist here
        calls, lock = [], threading.Lock()
        threads.parallel_for(_record(calls, lock), 4, "child", work=work)
        os.write(write, str(len(calls)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 16) == b"2" and status == 0
    os.close(read)
