"""The MPI processes of a run: rank, size, and the collectives glassnet needs, with timeouts.

mpi4py is imported only when the process was started by an MPI launcher (``mpiexec``), so that
``import glassnet`` and single-process runs never load it. Every collective is non-blocking
underneath and polled, which gives it a timeout and lets rank 0 notice another rank's failure
while it waits:

- an exception on rank r: rank r prints its traceback, sends a one-line summary to rank 0 and
  the job ends with ``MPI_Abort``; rank 0 names the rank that failed.
- a rank whose process ends (a native library's ``exit()``): under ``mpiexec
  -disable-auto-cleanup`` MPICH signals the survivors (SIGUSR1) and rank 0 names the rank whose
  process is gone; by default the launcher ends the other ranks at once.
- a rank killed by a signal (SIGKILL, the OOM killer): the launcher (MPICH's hydra, Open MPI's
  mpirun) ends the other ranks at once and names the signal. Hydra does so even under
  ``-disable-auto-cleanup`` as soon as it reaps the killed process, so rank 0 names the rank
  only if its SIGUSR1 arrives first.
- a rank that hangs: every collective gives up after ``timeout`` seconds; the ranks still
  alive report to rank 0, which names the ones that did not, and aborts the job.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from typing import Any, NoReturn

import numpy as np

DEFAULT_TIMEOUT = 300.0  # seconds; longer than any validation or checkpoint write between steps
_FAILURE_TAG, _ALIVE_TAG = 7001, 7002
# What MPI launchers put in the environment of the processes they start: world size.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def _encode(value: Any) -> bytes:
    """``value`` as JSON bytes (no pickle: the ranks exchange data, never code)."""

    def plain(item: Any) -> Any:
        if isinstance(item, (np.ndarray, np.generic)):
            return item.tolist()
        raise TypeError(f"cannot send a {type(item).__name__} to the other ranks")

    return json.dumps(value, default=plain).encode()


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun)."""
    return any(name in os.environ for name in _LAUNCHER_SIZES)


class SingleProcess:
    """The world of a process started without MPI: rank 0 of 1; collectives return their input."""

    rank, size = 0, 1
    timeout = DEFAULT_TIMEOUT

    def allreduce(self, buffer: np.ndarray, op: str = "sum", what: str = "allreduce") -> np.ndarray:
        return buffer

    def broadcast(self, buffer: np.ndarray, what: str = "broadcast") -> np.ndarray:
        return buffer

    def broadcast_object(self, value: Any, what: str = "broadcast") -> Any:
        return value

    def allgather_object(self, value: Any, what: str = "allgather") -> list[Any]:
        return [value]

    def peers(self) -> list[tuple[str, int]]:
        return [(socket.gethostname(), os.getpid())]

    def fail(self, summary: str) -> NoReturn:
        raise RuntimeError(summary)  # not reached: fit re-raises in a single process


class Communicator(SingleProcess):
    """``MPI.COMM_WORLD`` with timeouts; see the module docstring for what failures do.

    Args:
        timeout: seconds a collective may wait for the other ranks before the job is ended.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        from mpi4py import MPI

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout)
        self._peers: list[tuple[str, int]] | None = None
        self._signalled: float | None = None  # when MPICH signalled a process failure
        self._pending: list[Any] = []  # send buffers that must outlive their requests
        if threading_main() and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
            signal.signal(signal.SIGUSR1, self._on_peer_failure)

    # --- collectives -----------------------------------------------------------------------

    def _op(self, op: str) -> Any:
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        if op not in ops:
            raise ValueError(f"op={op!r} must be one of {sorted(ops)}")
        return ops[op]

    def allreduce(self, buffer: np.ndarray, op: str = "sum", what: str = "allreduce") -> np.ndarray:
        """Reduce ``buffer`` (C-contiguous) over all ranks, in place; returns it."""
        if self.size > 1:
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self._op(op)), what)
        return buffer

    def broadcast(self, buffer: np.ndarray, what: str = "broadcast") -> np.ndarray:
        """Rank 0's ``buffer`` on every rank, in place; returns it."""
        if self.size > 1:
            self._wait(self.comm.Ibcast(buffer, root=0), what)
        return buffer

    def broadcast_object(self, value: Any, what: str = "broadcast") -> Any:
        """Rank 0's ``value`` (JSON: numbers, strings, lists, dicts; tuples and arrays arrive
        as lists) on every rank."""
        if self.size == 1:
            return value
        payload = _encode(value) if self.rank == 0 else b""
        size = self.broadcast(np.array([len(payload)], dtype=np.int64), what)
        data = np.frombuffer(payload, dtype=np.uint8).copy() if self.rank == 0 else None
        data = self.broadcast(np.zeros(int(size[0]), np.uint8) if data is None else data, what)
        return json.loads(data.tobytes())

    def allgather_object(self, value: Any, what: str = "allgather") -> list[Any]:
        """Every rank's ``value``, in rank order (a small object: one broadcast per rank)."""
        gathered = []
        for root in range(self.size):
            payload = _encode(value) if self.rank == root else b""
            size = np.array([len(payload)], dtype=np.int64)
            self._wait(self.comm.Ibcast(size, root=root), what)
            data = np.frombuffer(payload, np.uint8).copy() if self.rank == root else None
            data = np.zeros(int(size[0]), np.uint8) if data is None else data
            self._wait(self.comm.Ibcast(data, root=root), what)
            gathered.append(json.loads(data.tobytes()))
        return gathered

    def peers(self) -> list[tuple[str, int]]:
        """(host, pid) of every rank, in rank order (gathered once)."""
        if self._peers is None:
            self._peers = self.allgather_object((socket.gethostname(), os.getpid()), "start-up")
        return self._peers

    def _wait(self, request: Any, what: str) -> None:
        """Poll ``request`` until it completes; rank 0 watches for failures meanwhile."""
        deadline = time.monotonic() + self.timeout
        polls = 0
        while not request.Test():
            polls += 1
            if polls % 64 == 0:
                if self._signalled is not None:
                    self._peer_failed(what)
                if self.rank == 0:
                    self._check_failure_messages()
                if time.monotonic() > deadline:
                    self._timed_out(what)
            # yield the core at once (ranks may share cores), then back off up to 2 ms
            time.sleep(0 if polls < 2000 else 0.002)

    # --- failures ---------------------------------------------------------------------------

    def _on_peer_failure(self, signum: int, frame: Any) -> None:
        self._signalled = time.monotonic()

    def _peer_failed(self, what: str) -> None:
        """After MPICH's SIGUSR1: rank 0 names the ranks whose processes are gone and ends the
        job; the others leave that to rank 0 unless it is gone too (or slow to do it)."""
        dead = self._dead_local_ranks()
        # rank 0 gone may be rank 0's own MPI_Abort, which the launcher is about to carry out
        patience = 2.0 if 0 in dead else 10.0
        if self.rank == 0 or time.monotonic() > self._signalled + patience:
            ranks = ", ".join(map(str, dead)) or "on another host"
            self.abort(f"the process of rank {ranks} of {self.size} ended during {what}")

    def _check_failure_messages(self) -> None:
        status = self.MPI.Status()
        if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_FAILURE_TAG, status=status):
            data = bytearray(status.Get_count(self.MPI.BYTE))
            source = status.Get_source()
            self.comm.Recv([data, self.MPI.BYTE], source=source, tag=_FAILURE_TAG)
            self.abort(f"rank {source} of {self.size} failed: {data.decode(errors='replace')}")

    def _dead_local_ranks(self) -> list[int]:
        """The ranks on this host whose processes have ended (gone, or zombies)."""
        host = socket.gethostname()
        return [
            rank
            for rank, (peer_host, pid) in enumerate(self._peers or [])
            if peer_host == host and rank != self.rank and _process_ended(pid)
        ]

    def _timed_out(self, what: str) -> NoReturn:
        """Name the ranks that do not answer: the live ones tell rank 0 they are waiting."""
        grace = min(10.0, max(1.0, self.timeout / 4))
        note = f"no answer within {self.timeout:g} s during {what}"
        if self.rank != 0:
            self._send_to_root(b"waiting", _ALIVE_TAG, grace * 2)
            self.abort(f"rank {self.rank}: {note}; rank 0 did not end the job")
        alive = {0}
        deadline = time.monotonic() + grace
        status = self.MPI.Status()
        while time.monotonic() < deadline and len(alive) < self.size:
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_ALIVE_TAG, status=status):
                data = bytearray(status.Get_count(self.MPI.BYTE))
                self.comm.Recv([data, self.MPI.BYTE], source=status.Get_source(), tag=_ALIVE_TAG)
                alive.add(status.Get_source())
            else:
                time.sleep(0.01)
        silent = sorted(set(range(self.size)) - alive) or self._dead_local_ranks()
        ranks = ", ".join(map(str, silent)) if silent else "unknown"
        self.abort(f"{note}: rank {ranks} of {self.size} died or hangs")

    def _send_to_root(self, payload: bytes, tag: int, grace: float) -> None:
        """Send ``payload`` to rank 0, then give it ``grace`` seconds to end the job."""
        data = bytearray(payload)
        request = self.comm.Isend([data, self.MPI.BYTE], dest=0, tag=tag)
        self._pending.append((request, data))
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            request.Test()
            time.sleep(0.01)

    def fail(self, summary: str) -> NoReturn:
        """End the job after an exception on this rank; rank 0 names this rank."""
        if self.rank == 0 or self.size == 1:
            self.abort(f"rank {self.rank} of {self.size} failed: {summary}")
        print(f"glassnet: rank {self.rank} of {self.size} failed: {summary}", file=sys.stderr)
        sys.stderr.flush()
        self._send_to_root(summary.encode(), _FAILURE_TAG, grace=min(30.0, self.timeout))
        self.abort(f"rank {self.rank} of {self.size} failed: {summary}")

    def abort(self, message: str) -> NoReturn:
        """Print ``glassnet: message`` and end every rank of the job (MPI_Abort)."""
        hint = "the last complete checkpoint is kept: continue with --resume (resume=True)"
        print(f"glassnet: {message}; ending all ranks ({hint})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        _wait_until_read((sys.stdout, sys.stderr), seconds=1.0)
        self.comm.Abort(1)
        os._exit(1)  # not reached


def _wait_until_read(streams: tuple[Any, ...], seconds: float) -> None:
    """Wait (at most ``seconds``) until the reader of each pipe has taken what was written.

    Hydra forwards a rank's output from a pipe; MPI_Abort's kill otherwise races it and can
    drop the message that names the failed rank (seen in about one abort in four). Linux
    reports a pipe's unread bytes on its write end; elsewhere this may not wait.
    """
    try:
        import fcntl
        import termios
    except ImportError:  # not POSIX
        return
    deadline = time.monotonic() + seconds
    unread = np.zeros(1, np.int32)
    for stream in streams:
        try:
            fd = stream.fileno()
            while time.monotonic() < deadline:
                fcntl.ioctl(fd, termios.FIONREAD, unread)
                if unread[0] == 0:
                    break
                time.sleep(0.005)
        except (OSError, ValueError, AttributeError):
            continue  # not a pipe (a file, a terminal): nothing to wait for


def _process_ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child stays a zombie until its parent (the launcher) reaps it
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


_world: SingleProcess | None = None


def world(timeout: float | None = None) -> SingleProcess:
    """This run's processes: a :class:`Communicator` under an MPI launcher, else one process.

    The first call decides (and imports mpi4py under a launcher); ``timeout`` sets the
    collectives' timeout in seconds (default 300).
    """
    global _world
    if _world is None:
        _world = Communicator(DEFAULT_TIMEOUT) if launched_by_mpi() else SingleProcess()
    if timeout is not None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0")
        _world.timeout = float(timeout)
    return _world
