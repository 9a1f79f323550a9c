"""A first run's compiling (glassnet.kernels.first_run): the helper compiles the backward
kernels a training step will call, for exactly the types it will call them with; file locks
keep two processes from compiling one kernel; the helper runs only our own kernels."""

import contextlib
import os
import subprocess
import sys
import textwrap
import time
import weakref

import numba
import numpy as np
import pytest

from glassnet import kernels, nn
from glassnet.kernels import conv as conv_kernels
from glassnet.kernels import cross_entropy as ce_kernels
from glassnet.kernels import first_run
from glassnet.kernels import pool as pool_kernels

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="the Numba kernels are off")


@pytest.mark.parametrize("value", [
    np.zeros((3, 4), np.float32),
    np.zeros((3, 4), np.float64, order="F"),
    np.zeros((3, 4, 5), np.float32)[:, ::2],
    np.zeros(6, np.int8)[::2],
    np.zeros((2, 1, 3, 3, 2, 2), np.float32),
    np.zeros(5, np.int64),
    np.zeros(()),
    3, 2.5, True, np.float32(0.1), np.int32(7),
])  # fmt: skip
def test_a_described_argument_is_rebuilt_with_the_same_numba_type(value):
    word = first_run.describe(value)
    assert " " not in word
    assert numba.typeof(first_run.rebuild(word)) == numba.typeof(value)


def test_a_read_only_array_is_rebuilt_read_only():
    value = np.zeros((2, 3), np.float32)
    value.flags.writeable = False
    rebuilt = first_run.rebuild(first_run.describe(value))
    assert not rebuilt.flags.writeable
    assert numba.typeof(rebuilt) == numba.typeof(value)


def test_what_cannot_be_described_is_not_requested():
    assert first_run.describe("text") is None
    assert first_run.describe(None) is None


def _training_step(model, x, y):
    loss = nn.CrossEntropyLoss()
    loss(model(x), y)
    model.backward(loss.backward())


def _bn_model(rng):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10, rng=rng),
    )


@pytest.mark.parametrize("make_model", [lambda rng: nn.convnet(rng=rng), _bn_model])
def test_each_requested_backward_kernel_is_called_with_the_types_requested(monkeypatch, make_model):
    """What the helper is asked to compile is what the training step then calls: every
    request's (kernel, argument types) is one of the step's own first calls, or, where a
    forward kernel names several possible followers, one of them is."""
    calls, requests = set(), set()

    def record_prepare(kernel, args):
        calls.add((kernel, tuple(first_run.describe(a) for a in args)))
        followers = first_run._followers.get(kernel, ())
        named = {
            (backward, tuple(first_run.describe(a) for a in backward_args))
            for backward, backward_args in (follower(*args) for follower in followers)
        }
        if named:
            requests.add(frozenset(named))

    monkeypatch.setattr(first_run, "ready", set())
    monkeypatch.setattr(first_run, "prepare", record_prepare)
    rng = np.random.default_rng(0)
    model = make_model(rng)
    size = 28 if len(model) > 6 else 8
    x = rng.standard_normal((4, 1, size, size)).astype(np.float32)
    _training_step(model, x, np.arange(4) % 10)
    assert requests, "the model's forward kernels declare what follows them"
    missed = [named for named in requests if not named & calls]
    assert not missed, f"requested but not called so: {missed}"


def _run_on_an_empty_cache(code, tmp_path):
    """Run ``code`` in a new process with the helper on and an empty cache; it prints ok."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "GLASSNET_BACKGROUND_COMPILE": "1"}
    run = _run(code, env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def _run(code, env, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


def test_the_helper_compiles_the_backward_kernels_a_first_step_then_loads(tmp_path):
    """With an empty cache, the forward pass asks the helper for the backward kernels; once
    they are in the cache, the backward pass loads them instead of compiling them."""
    code = """
        import time
        from pathlib import Path
        import numpy as np
        from glassnet import nn
        from glassnet.kernels import conv, pool, first_run

        cache = Path(__import__("os").environ["NUMBA_CACHE_DIR"])
        model, loss = nn.convnet(rng=np.random.default_rng(0)), nn.CrossEntropyLoss()
        x = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
        logits = model(x)
        assert first_run._helper is not None, "no helper started on an empty cache"
        # (the ReLUs run inside the poolings: their gradients go through the poolings' argmax)
        backward = [conv._col2im, pool._max_pool2d_backward]
        deadline = time.monotonic() + 240
        # (with the loss kernel in the cache too: while the loss waited for the helper, this
        # process would compile the backward kernels itself)
        names = [
            "conv._col2im", "pool._max_pool2d_backward", "cross_entropy._rows_kernel",
        ]
        while not all(any(cache.rglob(name + "*.nbi")) for name in names):
            assert time.monotonic() < deadline, "the helper did not fill the cache"
            time.sleep(0.1)
        time.sleep(0.5)  # the index file is written last; let the data file's write settle
        loss(logits, np.arange(8) % 10)
        model.backward(loss.backward())
        for kernel in backward:
            assert sum(kernel.stats.cache_hits.values()) == 1, kernel
            assert sum(kernel.stats.cache_misses.values()) == 0, kernel
        print("ok")
    """
    _run_on_an_empty_cache(code, tmp_path)


def test_the_loss_kernel_compiles_in_the_helper_before_the_forward_pass_reaches_it(tmp_path):
    code = """
        import time
        from pathlib import Path
        import numpy as np
        from glassnet import nn
        from glassnet.kernels import cross_entropy, first_run

        cache = Path(__import__("os").environ["NUMBA_CACHE_DIR"])
        loss = nn.CrossEntropyLoss()  # asks the helper for its kernel: nothing else has run
        assert first_run._helper is not None, "no helper started on an empty cache"
        deadline = time.monotonic() + 240
        while not any(cache.rglob("cross_entropy._rows_kernel*.nbi")):
            assert time.monotonic() < deadline, "the helper did not compile the loss kernel"
            time.sleep(0.1)
        time.sleep(0.5)  # the index file is written last; let the data file's write settle
        loss(np.zeros((4, 10), np.float32), np.arange(4))
        kernel = cross_entropy._rows_kernel(True, False, False, False)
        assert sum(kernel.stats.cache_hits.values()) == 1, kernel.stats
        assert sum(kernel.stats.cache_misses.values()) == 0, kernel.stats
        print("ok")
    """
    _run_on_an_empty_cache(code, tmp_path)


def test_no_helper_when_switched_off(tmp_path):
    code = """
        import numpy as np
        from glassnet import nn
        from glassnet.kernels import first_run
        nn.convnet()(np.zeros((2, 1, 28, 28), np.float32))
        print(first_run._helper)
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "GLASSNET_BACKGROUND_COMPILE": "0"}
    run = _run(code, env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"


def test_a_process_waits_for_the_kernel_another_holds_the_lock_of():
    """While this test holds im2col's lock, another process's first convolution waits; it
    goes on once the lock is released (from the warm cache it would take milliseconds)."""
    code = """
        import sys
        import numpy as np
        from glassnet.functional.conv import im2col
        x = np.zeros((2, 3, 5, 5), np.float32)
        print("started", flush=True)
        im2col(x, (3, 3))
        print("done", flush=True)
    """
    x = np.zeros((2, 5, 5, 3), np.float32)
    conv_kernels.im2col(x, 3, 3, 1, 1, 0, 0, 3, 3, np.empty((18, 27), np.float32))  # cached
    env = {**os.environ, "GLASSNET_BACKGROUND_COMPILE": "0"}
    with first_run.kernel_lock(conv_kernels._im2col):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout.readline().strip() == "started"
        time.sleep(3)
        assert child.poll() is None, "the child did not wait for the lock"
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    assert out.strip() == "done"


def test_a_lock_held_elsewhere_is_reported_busy_without_waiting():
    """flock locks belong to an open file: a second open of the lock file (here in the same
    process, as in another) finds it taken and does not wait."""
    kernel = conv_kernels._im2col
    if first_run._lock_path(kernel) is None:
        pytest.skip("no lock files here (no fcntl or no cache directory)")
    with first_run.kernel_lock(kernel) as held:
        assert held
        with first_run.kernel_lock(kernel, wait=False) as free:
            assert not free
    with first_run.kernel_lock(kernel, wait=False) as free:
        assert free


class _FakeKernel:
    """Stands for a Numba kernel: records its compiles in ``log``; ``on_compile`` runs then."""

    def __init__(self, name, log, on_compile=None):
        self.name, self.log, self.on_compile = name, log, on_compile
        self.py_func = None

    def __call__(self, *args):
        self.log.append(self.name)
        if self.on_compile:
            self.on_compile()


def _fake_locks(monkeypatch, held):
    """Locks of the fake kernels: those in ``held`` are another process's until waited for."""

    @contextlib.contextmanager
    def kernel_lock(kernel, wait=True):
        if kernel in held and wait:
            held.discard(kernel)  # as if the other process finished and let go
        yield kernel not in held

    monkeypatch.setattr(first_run, "kernel_lock", kernel_lock)
    monkeypatch.setattr(first_run, "_request", lambda *args, **kwargs: None)
    monkeypatch.setattr(first_run, "ready", set())
    monkeypatch.setattr(first_run, "_upcoming", [])
    monkeypatch.setattr(first_run, "_followers", {})
    monkeypatch.setattr(first_run, "_helper_tried", False)


def test_while_another_compiles_a_kernel_this_process_compiles_its_followers(monkeypatch):
    """A kernel locked by the helper: this process compiles what it will need next (the
    followers, newest first, then what was expected ahead), and takes the kernel when its
    lock comes free; a follower the helper holds is left to the helper."""
    log, held = [], set()
    _fake_locks(monkeypatch, held)
    forward, loss = _FakeKernel("forward", log), _FakeKernel("loss", log)
    early, late, busy = (_FakeKernel(name, log) for name in ("early", "late", "busy"))
    first_run.expect(loss, ())
    first_run._followers[forward] = tuple(lambda k=k: (k, ()) for k in (early, busy, late))
    held.update({loss, busy})
    first_run.prepare(forward, ())  # free: compiled at once, its followers wait their turn
    assert log == ["forward"]
    first_run.prepare(loss, ())
    assert log == ["forward", "late", "early", "loss"]
    assert first_run.ready == {forward, loss, early, late}
    assert first_run._upcoming == []


def test_a_locked_kernel_is_taken_as_soon_as_its_lock_is_free(monkeypatch):
    log, held = [], set()
    _fake_locks(monkeypatch, held)
    kernel = _FakeKernel("kernel", log)
    # the first follower's compile is when the other process lets go of the kernel
    first = _FakeKernel("first", log, on_compile=lambda: held.discard(kernel))
    second = _FakeKernel("second", log)
    first_run._followers[kernel] = ((lambda: (second, ())), (lambda: (first, ())))
    held.add(kernel)
    first_run.prepare(kernel, ())
    assert log == ["first", "kernel"]
    assert first_run._upcoming == [(second, ())]


def test_the_kernels_noted_for_later_do_not_keep_the_batch_alive(monkeypatch):
    log, held = [], set()
    _fake_locks(monkeypatch, held)
    kernel, follower = _FakeKernel("kernel", log), _FakeKernel("follower", log)
    first_run._followers[kernel] = (lambda x: (follower, (x, 2)),)
    activations = np.zeros((4, 3), np.float32)
    alive = weakref.ref(activations)
    first_run.prepare(kernel, (activations,))
    del activations
    assert alive() is None
    assert first_run._upcoming == [(follower, ("a<f42C", "i"))]


def test_the_helper_serves_the_newest_request_first_and_only_our_kernels(monkeypatch):
    served = []
    monkeypatch.setattr(first_run, "_compile", served.append)
    read, write = os.pipe()
    os.write(write, b"glassnet.kernels.conv:_im2col a\nglassnet.kernels.pool:_x b\n")
    os.write(write, b"glassnet.kernels.conv:_im2col a\n")  # a repeat is served once
    first_run.serve(read, idle_seconds=0.5)  # returns when idle
    assert served == ["glassnet.kernels.pool:_x b", "glassnet.kernels.conv:_im2col a"]
    os.write(write, b"glassnet.kernels.conv:_col2im a\n")
    os.close(write)
    first_run.serve(read, idle_seconds=30)  # returns at once at end of file, work or not
    os.close(read)
    assert len(served) == 2


def test_kernels_asked_for_ahead_are_served_first_in_the_order_asked(monkeypatch):
    served = []
    monkeypatch.setattr(first_run, "_compile", served.append)
    read, write = os.pipe()
    os.write(write, b"glassnet.kernels.pool:_a a\nahead glassnet.kernels.x:_b b\n")
    os.write(write, b"glassnet.kernels.pool:_c c\nahead glassnet.kernels.x:_d d\n")
    os.write(write, b"glassnet.kernels.x:_b b\n")  # asked for ahead already: served once
    first_run.serve(read, idle_seconds=0.5)
    os.close(read)
    os.close(write)
    assert served == [
        "glassnet.kernels.x:_b b",
        "glassnet.kernels.x:_d d",
        "glassnet.kernels.pool:_c c",
        "glassnet.kernels.pool:_a a",
    ]


def test_a_kernel_built_by_a_factory_is_named_so_the_helper_finds_it():
    kernel = ce_kernels._rows_kernel(True, False, True, False)
    assert kernel.first_run_name == "_rows_kernel/1/0/1/0"
    assert first_run._resolve("glassnet.kernels.cross_entropy:_rows_kernel/1/0/1/0") is kernel
    assert ce_kernels._rows_kernel(True, False, True, False) is kernel  # built once per flags


@pytest.fixture
def asked_and_called(monkeypatch):
    """(asked, called): what this process then asks the helper for, as (kernel, argument
    words, ahead), and what it prepares, as (kernel, argument words); as in a new process."""
    asked, called = [], []
    monkeypatch.setattr(first_run, "ready", set())
    monkeypatch.setattr(first_run, "_helper_tried", False)

    def words(args):
        return tuple(map(first_run.describe, args))

    monkeypatch.setattr(
        first_run,
        "_request",
        lambda kernel, args, ahead=False: asked.append((kernel, words(args), ahead)),
    )
    monkeypatch.setattr(
        first_run, "prepare", lambda kernel, args: called.append((kernel, words(args)))
    )
    return asked, called


@pytest.mark.parametrize("flags", [(False, False, False), (True, True, False), (True, False, True)])
def test_the_loss_layer_asks_ahead_for_the_kernel_its_forward_calls(asked_and_called, flags):
    """What CrossEntropyLoss's constructor asks the helper for is exactly the (kernel, types)
    its forward pass then prepares, for each of the options that pick another kernel."""
    inplace, smoothing, weighted = flags
    asked, called = asked_and_called
    weight = np.linspace(0.5, 2, 10, dtype=np.float32) if weighted else None
    loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1 * smoothing, inplace=inplace)
    assert [ahead for *_, ahead in asked] == [True]
    logits = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    loss(logits, np.arange(6) % 10)
    assert called == [(kernel, words) for kernel, words, _ in asked]


def test_linear_cross_entropy_asks_ahead_for_the_kernel_its_chunks_call(asked_and_called):
    asked, called = asked_and_called
    layer = nn.LinearCrossEntropy(8, 10, label_smoothing=0.1, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    layer(x, np.arange(6))
    assert [(kernel, words) for kernel, words, _ in asked] == called


def test_a_first_convolution_asks_ahead_for_its_fused_weight_gradient_kernel(asked_and_called):
    """Conv2d's training forward asks for the kernel that takes its weight gradient through
    the MaxPool2d after it, with the types Sequential's fused backward then calls it with."""
    asked, called = asked_and_called
    model = nn.Sequential(nn.Conv2d(3, 4, (3, 2), padding=1), nn.MaxPool2d(2), nn.Flatten())
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    model(x)
    model.backward(np.ones((2, 4 * 4 * 4), np.float32), need_input_grad=False)
    fused = pool_kernels._conv_weight_grad_2x2(3, 2, 3)
    requests = [(kernel, words) for kernel, words, _ in asked if kernel is fused]
    assert len(requests) == 1
    assert requests[0] in called


def test_the_helper_leaves_when_idle():
    read, write = os.pipe()
    start = time.monotonic()
    first_run.serve(read, idle_seconds=0.2)
    assert time.monotonic() - start < 5
    os.close(read)
    os.close(write)


@pytest.mark.parametrize("request_line", [
    "os:system i",  # not one of our kernels: never imported, never called
    "glassnet.kernels.conv:im2col a<f44C",  # a Python wrapper, not a kernel
    "glassnet.kernels.conv:_nothing_here i",
    "glassnet.kernels.conv:_im2col zzz",  # a word that does not describe a type
    "glassnet.kernels.conv:_im2col/1 a<f44C",  # flags for a kernel that no factory builds
    "glassnet.kernels.cross_entropy:_rows_kernel/1/0/0 i",  # too few flags
    "glassnet.kernels.cross_entropy:_rows_kernel/1/0/0/x i",  # a flag that is not a number
    "glassnet.kernels.cross_entropy:_rows_kernel/1/0/0/1000 i",  # nor a small one
])  # fmt: skip
def test_a_request_for_anything_else_is_ignored(monkeypatch, request_line):
    imported = []
    real_import = first_run.importlib.import_module
    monkeypatch.setattr(
        first_run.importlib,
        "import_module",
        lambda name: imported.append(name) or real_import(name),
    )
    first_run._compile(request_line)  # no exception, nothing run
    assert all(name.startswith("glassnet.kernels.") for name in imported)


_VARIANT_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from glassnet.functional.conv import conv2d
    from glassnet.functional.pool import conv2d_max_pool2d, max_pool2d
    from glassnet.kernels import pool
    for c_in, c_out in [tuple(map(int, s.split("x"))) for s in sys.argv[1:]]:
        rng = np.random.default_rng(c_in)
        x = rng.standard_normal((2, c_in, 9, 8)).astype(np.float32)
        w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
        got, _ = conv2d_max_pool2d(x, w)
        want, _ = max_pool2d(conv2d(x, w), 2)
        assert np.abs(got - want).max() < 1e-5
        (result,) = pool._conv_max_pool_2x2(3, 3, c_in, 1, 1, c_out).overloads.values()
        print(result.fndesc.mangled_name)
""")


def test_variants_compiled_in_different_processes_load_side_by_side(tmp_path):
    """Each process numbers the functions it compiles from 1, and Numba's symbols carry the
    number and the qualname: two variants of one kernel factory compiled by two processes
    (a helper and the main process, two MPI ranks) had the same symbols, and one process
    loading both from the cache could call into the wrong one. Named by their flags, they
    differ."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "GLASSNET_BACKGROUND_COMPILE": "0"}

    def run(*variants):
        out = subprocess.run([sys.executable, "-c", _VARIANT_RUN, *variants], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    (first,), (second,) = run("1x16"), run("3x8")  # each compiled alone, in a new process
    assert first != second
    assert run("1x16", "3x8") == [first, second]  # both loaded from the cache, in one process
