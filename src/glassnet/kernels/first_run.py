"""A first run on a new machine compiles its kernels on both cores, each kernel once.

With an empty kernel cache, the seeds' convnet compiles seven kernels in its first training
step: four or five seconds of Numba on one core. Two things shorten that:

* **The backward kernels compile in a second process.** The first time a forward kernel runs
  on a cold cache, this process asks a helper (``python -m glassnet.kernels.first_run``,
  started once) to compile the backward kernel that will follow it, for the argument types it
  will get (:func:`follows` declares the pairs beside the kernels). The helper compiles the
  most recent request first (a backward pass runs in reverse) into the shared disk cache,
  while this process goes on with its forward pass; it exits when it has been idle a while.
* **Some kernels compile ahead.** The forward kernels are known only as the forward pass
  reaches them, but the loss at its end is known when the loss layer is made, and a first
  convolution's fused weight gradient (the step's last kernel) when it runs forward:
  :func:`expect` sends the helper those at once. It compiles them while this process
  compiles the forward kernels, and this process then compiles the backward kernels it
  reaches before the helper does.
* **A lock per kernel.** Every process compiles or loads a kernel while holding a file lock
  beside its cache entry, so whoever comes second waits and loads the other's work from the
  cache instead of compiling it again: the helper and this process, or the ranks of an MPI
  job starting together. Rather than wait, a process that finds a kernel it needs locked
  first compiles the followers it asked the helper for and those named ahead, whichever the
  helper has not started (the loss kernel, the first one a forward pass waits for, takes the
  helper a second; the three backward kernels then compile here in the meantime).

Same compiler, same CPU, same machine code: what a run computes does not depend on who
compiled what. Nothing is started under MPI (the ranks already use the cores), on one core,
on a warm cache, without ``fcntl`` (Windows), or with ``GLASSNET_BACKGROUND_COMPILE=0``.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from glassnet._environment import available_cores, local_processes

try:
    import fcntl
except ImportError:  # Windows: no locks and no helper; every process compiles for itself
    fcntl = None

HELPER_VARIABLE = "GLASSNET_COMPILE_HELPER"  # set in the helper's environment
AHEAD = "ahead"  # the first word of a request to serve before the others
IDLE_SECONDS = 20.0  # the helper exits after this long without a request

_Follower = Callable[..., tuple[Any, tuple]]
_followers: dict[Any, tuple[_Follower, ...]] = {}
ready: set[Any] = set()  # kernels compiled or loaded in this process
_lock = threading.Lock()
_helper: subprocess.Popen | None = None
_helper_tried = False
_requested: set[str] = set()  # request lines sent to the helper
# Followers this process asked for, as (kernel, argument words): compiled here while a kernel
# this process needs is locked by whoever compiles it (see prepare). Words, not the arguments:
# those are a batch's activations, which this list would otherwise keep alive.
_upcoming: list[tuple[Any, tuple[str, ...]]] = []


def follows(forward: Any, *followers: _Follower) -> None:
    """Declare that each ``follower(*forward_args)`` gives the kernel (and its arguments, for their
    types) that a training step calls after ``forward``; called by the kernel modules. Give
    more than one follower where the step's choice depends on what comes later (a ReLU's
    gradient arrives in its own layout, or in another one that is copied first)."""
    _followers[forward] = followers


def kernel_factory(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a function of booleans or small ints that builds a kernel specialised to them
    (a closure, its Python function decorated with :func:`variant` of the same values): each
    set of values is built once, and its kernel carries a name the helper resolves back to it
    (``factory/1/0/0``)."""

    @functools.cache
    def make(*flags: int) -> Any:
        kernel = factory(*flags)
        suffix = "_".join(str(int(f)) for f in flags)
        if not kernel.py_func.__qualname__.endswith(f"_{suffix}"):
            raise TypeError(
                f"{factory.__name__}'s kernel needs @variant({', '.join(map(str, flags))})"
            )
        kernel.first_run_name = "/".join([factory.__name__, *(str(int(f)) for f in flags)])
        return kernel

    functools.update_wrapper(make, factory)
    make.makes_kernels = True
    return make


def variant(*flags: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a kernel factory's Python function, below its ``@njit``, to name it after the
    factory's flags (``kernel_3_3_1``). Numba's symbols carry a function's qualname and a
    counter of this process, so two variants of one closure compiled in different processes
    could both be ``kernel`` number 1: loaded together from the disk cache, one's symbols
    shadowed the other's and a call failed ("NRT_adapt_ndarray_to_python: 'descr' is NULL").
    Named apart, each variant also has its own cache index and lock."""

    def rename(function: Callable[..., Any]) -> Callable[..., Any]:
        suffix = "_".join(str(int(flag)) for flag in flags)
        function.__name__ = f"{function.__name__}_{suffix}"
        function.__qualname__ = f"{function.__qualname__}_{suffix}"
        return function

    return rename


def expect(kernel: Any, args: tuple) -> None:
    """Ask a first run's helper to compile ``kernel`` for ``args``' types now, ahead of the
    backward kernels, for a kernel no forward kernel names as its follower (the loss, a
    first layer's fused weight gradient): the helper compiles it while this process
    compiles the forward pass's, and this process the backward ones it reaches first.
    Nothing on a warm cache, under MPI, or once this process has the kernel."""
    if not hasattr(kernel, "py_func") or (_helper_tried and _helper is None):
        return  # (the second test: no helper in this process, the common case after a check)
    with _lock:
        if kernel not in ready:
            _request(kernel, args, ahead=True)
            _remember(kernel, args, last=True)  # the last this process takes up itself


def prepare(kernel: Any, args: tuple) -> None:
    """Before the first call of ``kernel`` in this process: ask the helper for its followers,
    then compile it for ``args`` (or load it from the cache) under its file lock."""
    if not hasattr(kernel, "py_func"):  # not a Numba dispatcher: nothing to compile
        return
    with _lock:
        if kernel in ready:
            return
        for follower in _followers.get(kernel, ()):
            upcoming = follower(*args)
            _request(*upcoming)
            _remember(*upcoming)
        while not _compile_unless_locked(kernel, args):
            # The helper (or another process) is compiling it: meanwhile compile the next
            # kernel this process will need, newest first as the helper would, and load
            # this one when its lock comes free (from the cache, then).
            if not _compile_upcoming():
                with kernel_lock(kernel):
                    _compile_here(kernel, args)
                break


def _compile_here(kernel: Any, args: tuple) -> None:
    kernel(*args, 0, 0)  # an empty range: compiles for these types, touches nothing
    ready.add(kernel)


def _compile_unless_locked(kernel: Any, args: tuple) -> bool:
    """Compile or load ``kernel`` under its lock if the lock is free now; whether it was."""
    with kernel_lock(kernel, wait=False) as free:
        if free:
            _compile_here(kernel, args)
    return free


def _remember(kernel: Any, args: tuple, last: bool = False) -> None:
    """Note ``kernel`` for :func:`_compile_upcoming`, with the types of ``args``."""
    words = tuple(describe(value) for value in args)
    if None not in words and hasattr(kernel, "py_func"):
        _upcoming.insert(0 if last else len(_upcoming), (kernel, words))


def _compile_upcoming() -> bool:
    """Compile one follower that is neither ready nor being compiled elsewhere; whether
    there was one."""
    while _upcoming:
        kernel, words = _upcoming.pop()
        if kernel in ready:
            continue
        if _compile_unless_locked(kernel, tuple(rebuild(word) for word in words)):
            return True
    return False


@contextmanager
def kernel_lock(kernel: Any, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive file lock beside ``kernel``'s disk cache (none where there is none).

    Gives True while the lock is held (or there is none to take); with ``wait=False`` it does
    not wait for a lock another process holds, and gives False instead.
    """
    path = _lock_path(kernel)
    if path is None:
        yield True
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a cache we cannot write: Numba will not cache there either
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _lock_path(kernel: Any) -> Path | None:
    cache_path = getattr(getattr(kernel, "_cache", None), "_cache_path", None)
    py_func = getattr(kernel, "py_func", None)
    if fcntl is None or cache_path is None or py_func is None:
        return None
    name = f"{py_func.__module__}.{py_func.__qualname__}-{py_func.__code__.co_firstlineno}"
    return Path(cache_path) / f"{name.replace('<', '').replace('>', '')}.glassnet-lock"


def describe(value: Any) -> str | None:
    """One argument's Numba type as a word the helper can rebuild a value from, or None."""
    if isinstance(value, np.ndarray):
        layout = "C" if value.flags.c_contiguous else "F" if value.flags.f_contiguous else "A"
        readonly = "" if value.flags.writeable else "r"
        return f"a{value.dtype.str}{value.ndim}{layout}{readonly}"
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    if isinstance(value, np.generic):
        return f"s{value.dtype.str}"
    return None


def rebuild(word: str) -> Any:
    """A small value of the type :func:`describe` wrote down (tiny arrays, zeros)."""
    kind, rest = word[0], word[1:]
    if kind == "b":
        return False
    if kind == "i":
        return 0
    if kind == "f":
        return 0.0
    if kind == "s":
        return np.zeros((), np.dtype(rest))[()]
    if kind != "a":
        raise ValueError(f"unknown argument word {word!r}")
    readonly = rest.endswith("r")
    rest = rest.rstrip("r")
    dtype, ndim, layout = np.dtype(rest[:3]), int(rest[3:-1]), rest[-1]
    if layout == "A":  # a strided view: neither C- nor F-contiguous
        array = np.zeros((2,) * max(ndim - 1, 0) + (4,) * (ndim > 0), dtype)[..., ::2]
    else:
        array = np.zeros((2,) * ndim, dtype, order=layout)
    array.flags.writeable = not readonly
    return array


def _request(kernel: Any, args: tuple, ahead: bool = False) -> None:
    """Ask the helper (started if worth it) to compile ``kernel`` for ``args``' types; one
    asked for ``ahead`` comes before the backward kernels."""
    words = [describe(value) for value in args]
    name = getattr(kernel, "first_run_name", kernel.py_func.__qualname__)
    line = " ".join([AHEAD] * ahead + [f"{kernel.py_func.__module__}:{name}", *words])
    if None in words or line in _requested or not _helper_running():
        return
    _requested.add(line)
    try:
        _helper.stdin.write(line + "\n")
        _helper.stdin.flush()
    except (BrokenPipeError, OSError, ValueError):  # it has exited: compile here instead
        pass


def _helper_running() -> bool:
    global _helper, _helper_tried
    if not _helper_tried:
        _helper_tried = True
        if _helper_wanted():
            # the features this process compiles for, so that the helper's cache entries match
            env = {**os.environ, HELPER_VARIABLE: "1", "NUMBA_CPU_FEATURES": _cpu_features()}
            _helper = subprocess.Popen(
                [sys.executable, "-m", "glassnet.kernels.first_run"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            atexit.register(_release_helper)
    return _helper is not None and _helper.poll() is None


def _cpu_features() -> str:
    """The LLVM features Numba compiles with in this process (its cache entries carry them)."""
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen()._tm_features


def _release_helper() -> None:
    """At exit: close the request pipe, which tells the helper to leave."""
    try:
        _helper.stdin.close()
    except (OSError, ValueError):
        pass


def _helper_wanted() -> bool:
    from glassnet.kernels import cache_is_warm  # the package imports this module

    switch = os.environ.get("GLASSNET_BACKGROUND_COMPILE", "1").strip().lower()
    return (
        fcntl is not None
        and switch not in ("0", "false", "off")
        and not os.environ.get(HELPER_VARIABLE)
        and local_processes(os.environ) == 1
        and available_cores() >= 2
        and not cache_is_warm()
    )


def serve(fd: int = 0, idle_seconds: float = IDLE_SECONDS) -> None:
    """The helper's loop: read requests from ``fd``; compile those asked for ahead first (in
    the order asked), then the rest newest first; exit at end of file (the process that
    started it has ended) or after ``idle_seconds`` idle."""
    ahead: list[str] = []
    pending: list[str] = []
    seen: set[str] = set()
    buffer = b""
    while True:
        readable, _, _ = select.select([fd], [], [], 0 if ahead or pending else idle_seconds)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                words = line.decode("ascii", "replace").split()
                queue = ahead if words[:1] == [AHEAD] else pending
                request = " ".join(words[1:] if queue is ahead else words)
                if request and request not in seen:
                    seen.add(request)
                    queue.append(request)
            continue
        if not (ahead or pending):
            return
        _compile(ahead.pop(0) if ahead else pending.pop())


def _compile(request: str) -> None:
    """Compile one ``module:qualname word...`` request, under the kernel's lock."""
    target, *words = request.split()
    kernel = _resolve(target)
    if kernel is None:
        return
    try:
        with kernel_lock(kernel):
            kernel(*[rebuild(word) for word in words], 0, 0)
    except Exception:
        pass


def _resolve(target: str) -> Any:
    """The kernel a request names: ``module:name``, or ``module:factory/1/0`` for one built by
    a :func:`kernel_factory` (flags of at most 3 digits); None for anything that is not one
    of our kernels."""
    module_name, _, name = target.partition(":")
    if not module_name.startswith("glassnet.kernels."):
        return None  # only our own kernels, whatever the pipe says
    name, *flags = name.split("/")
    kernel = getattr(importlib.import_module(module_name), name, None)
    if flags:
        if not getattr(kernel, "makes_kernels", False) or not all(
            flag.isascii() and flag.isdigit() and len(flag) <= 3 for flag in flags
        ):
            return None
        try:
            kernel = kernel(*map(int, flags))
        except TypeError:  # the wrong number of flags
            return None
    return kernel if hasattr(kernel, "py_func") else None


if __name__ == "__main__":
    serve()
