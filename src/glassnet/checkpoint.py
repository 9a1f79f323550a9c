"""Checkpoints as safetensors files: arrays plus JSON metadata, no pickle, never half-written.

A checkpoint holds named arrays (weights, optimizer state, ...) and a JSON document (epoch,
step, RNG state, training options, history). Loading one can never run code: safetensors is
raw little-endian arrays behind a JSON header. Writes go to a temporary file in the same
directory, are flushed to disk, then renamed over the old file, so a crash mid-write leaves the
previous checkpoint intact. A SHA-256 over the arrays and the metadata is stored in the header
and checked on load, so a truncated or edited file is refused. A temporary file left behind by a
killed write is removed by the next write of the same file.

:func:`lock_directory` gives one process at a time a run directory (``glassnet train --out``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

FORMAT_NAME = "glassnet-checkpoint"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"


class CheckpointError(ValueError):
    """A checkpoint that is truncated, tampered with, or not a glassnet checkpoint."""


def _contiguous(array: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them (1,))."""
    return np.require(array, requirements="C")


def _digest(arrays: dict[str, np.ndarray], document: str) -> str:
    digest = hashlib.sha256(document.encode())
    for name in sorted(arrays):
        array = _contiguous(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]
) -> None:
    """Atomically write ``arrays`` and the JSON-serialisable ``metadata`` to ``path``."""
    arrays = {name: _contiguous(value) for name, value in arrays.items()}
    document = json.dumps(metadata, sort_keys=True)
    header = {"format": FORMAT, "metadata": document, "sha256": _digest(arrays, document)}
    atomic_write(Path(path), save_safetensors(arrays, metadata=header))


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, fsync it, rename it over ``path``.

    Temporary files of earlier writes of ``path`` that were killed midway are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)


def _read_header(payload: bytes) -> dict[str, Any]:
    size = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8 : 8 + size])


def _check_format(found: object, path: str | os.PathLike) -> None:
    name, _, version = str(found).partition("/")
    if name != FORMAT_NAME or not version.isdigit():
        raise CheckpointError(f"{path} is a safetensors file but not a glassnet checkpoint")
    if int(version) != FORMAT_VERSION:
        newer = "a newer" if int(version) > FORMAT_VERSION else "an older"
        raise CheckpointError(
            f"{path} is a glassnet checkpoint of format version {version}, written by {newer} "
            f"glassnet; this one reads version {FORMAT_VERSION}"
        )


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(arrays, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated, corrupt, edited, or not a glassnet checkpoint.
    """
    payload = Path(path).read_bytes()
    try:
        arrays = load_safetensors(payload)
        header = _read_header(payload).get("__metadata__", {})
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from None
    _check_format(header.get("format"), path)
    document = header.get("metadata", "")
    if _digest(arrays, document) != header.get("sha256"):
        raise CheckpointError(
            f"{path} fails its integrity check: its contents changed after it was written"
        )
    return arrays, json.loads(document)


_held: set[Path] = set()  # directories this process has locked


class DirectoryLockedError(OSError):
    """Another process holds the directory's lock."""


@contextlib.contextmanager
def lock_directory(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if missing) for the ``with`` block.

    The lock is an ``fcntl.flock`` on ``directory/.lock``, released when the block ends or the
    process dies (so a killed run never leaves a stale lock). The file records the holder's
    pid, which a second process names in its error. Re-entrant within one process. Where
    ``fcntl`` does not exist (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:  # this process holds it already (the CLI's recipe, then fit): re-enter
        yield
        return
    with open(directory / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise DirectoryLockedError(
                f"{directory} is in use by another glassnet process ({holder}); wait for it "
                "to finish or choose another --out"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
