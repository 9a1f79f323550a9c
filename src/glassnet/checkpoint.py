"""Checkpoints as safetensors files: arrays plus JSON metadata, no pickle, never half-written.

A checkpoint holds named arrays (weights, optimizer state, ...) and a JSON document (epoch,
step, RNG state, training options, history). Loading one can never run code: safetensors is
raw little-endian arrays behind a JSON header. Writes go to a temporary file in the same
directory, are flushed to disk, then renamed over the old file, so a crash mid-write leaves the
previous checkpoint intact. A SHA-256 over the arrays and the metadata is stored in the header
and checked on load, so a truncated or edited file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

FORMAT = "glassnet-checkpoint/1"


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
    """Write ``payload`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a glassnet checkpoint")
    document = header.get("metadata", "")
    if _digest(arrays, document) != header.get("sha256"):
        raise CheckpointError(
            f"{path} fails its integrity check: its contents changed after it was written"
        )
    return arrays, json.loads(document)
