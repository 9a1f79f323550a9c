"""The IDX file format of MNIST and Fashion-MNIST, read strictly.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values. Images are magic 2051 (uint8, 3 dims:
N x rows x cols), labels 2049 (uint8, 1 dim: N). Files may be gzip-compressed.

Nothing in a file is trusted: the header's size is computed with Python integers and checked
against what the file can hold before anything is allocated, and a gzip stream is inflated
incrementally, never past the header's promise plus one byte (to detect trailing data).
"""

from __future__ import annotations

import gzip
import math
import os
import sys
import zlib
from typing import BinaryIO

import numpy as np

from glassnet.data.text import printable

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate emits at least 2 bits per 258-byte match: no gzip file inflates more than 1032-fold.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


class IdxError(ValueError):
    """An IDX file that is truncated, corrupt, or not what was expected."""


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array of the shape its header gives.

    Args:
        path: the file.
        expected_magic: 2051 for images, 2049 for labels, or None to accept any IDX type.
    Returns:
        The values, shape from the header (e.g. (60000, 28, 28) uint8 images; (0, 28, 28) for
        a file of no images).
    Raises:
        IdxError: naming the file and what is wrong (bad gzip stream, wrong magic number,
        header dimensions too large or not matching the file length, with the byte counts).
    """
    name = printable(path)
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read_stream(raw, name, expected_magic, size, compressed)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, name, expected_magic, size, compressed)
        except (OSError, EOFError, zlib.error) as error:
            reason = printable(str(error))
            raise IdxError(f"{name}: corrupt or truncated gzip data ({reason})") from None


def _read_stream(
    stream: BinaryIO, name: str, expected_magic: int | None, size: int, compressed: bool
) -> np.ndarray:
    dtype, dims = _read_header(stream, name, expected_magic)
    header_size = 4 + 4 * len(dims)
    expected = header_size + _payload_size(dims, dtype, name)
    promise = f"the header promises {' x '.join(map(str, dims))} values ({expected} bytes)"
    if compressed and expected > size * _MAX_DEFLATE_RATIO:
        raise IdxError(
            f"{name}: truncated: {promise}, a gzip file of {size} bytes inflates to at most "
            f"{size * _MAX_DEFLATE_RATIO}"
        )
    if not compressed and expected > size:  # a raw file's length is known: refuse it unread
        raise _truncated(name, promise, "holds", size, expected)
    payload = _read_up_to(stream, expected - header_size)
    if header_size + len(payload) < expected:
        verb = "inflates to" if compressed else "holds"
        raise _truncated(name, promise, verb, header_size + len(payload), expected)
    if stream.read(1):
        held = "inflates to more" if compressed else f"holds {size} bytes"
        raise IdxError(f"{name}: longer than its header says: {promise}, the file {held}")
    data = np.frombuffer(payload, dtype=dtype).reshape(dims)
    if not dtype.isnative:  # swap in place: no second copy of a large file
        data = data.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return data


def _truncated(name: str, promise: str, verb: str, held: int, expected: int) -> IdxError:
    missing = f"{expected - held} bytes missing"
    return IdxError(f"{name}: truncated: {promise}, the file {verb} {held} bytes ({missing})")


def _read_header(
    stream: BinaryIO, name: str, expected_magic: int | None
) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and the dimensions the header gives; the stream is left at the data."""
    head = stream.read(4)
    if len(head) < 4:
        raise IdxError(f"{name}: {len(head)} bytes is too short for an IDX header")
    magic = int.from_bytes(head, "big")
    type_code, ndim = head[2], head[3]
    if head[:2] != b"\x00\x00" or type_code not in _TYPES or ndim == 0:
        raise IdxError(f"{name}: not an IDX file (first bytes {head.hex()})")
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(expected_magic, "data")
        raise IdxError(
            f"{name}: magic number {magic}, expected {expected_magic} ({kind}); "
            "is this the right file?"
        )
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IdxError(f"{name}: header cut short ({4 + len(sizes)} of {4 + 4 * ndim} bytes)")
    dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    return np.dtype(_TYPES[type_code]), dims


def _payload_size(dims: tuple[int, ...], dtype: np.dtype, name: str) -> int:
    """Bytes of data the header promises, in Python integers so that no product wraps around."""
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > sys.maxsize:
        raise IdxError(
            f"{name}: the header's dimensions {' x '.join(map(str, dims))} of {dtype.itemsize}-"
            f"byte values make {nbytes} bytes, more than an array can hold (at most "
            f"{sys.maxsize}); is the header corrupt?"
        )
    return nbytes


def _read_up_to(stream: BinaryIO, nbytes: int) -> bytearray:
    """At most ``nbytes`` from ``stream``, in chunks: memory grows only with data that exists."""
    payload = bytearray()
    while len(payload) < nbytes:
        chunk = stream.read(min(_CHUNK, nbytes - len(payload)))
        if not chunk:
            break
        payload += chunk
    return payload


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    uint8 arrays of 3 dims get magic 2051 (images), of 1 dim 2049 (labels), as MNIST's files.
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX cannot hold an array of dtype {array.dtype} and {array.ndim} dims")
    if max(array.shape) >= 1 << 32:
        raise ValueError(f"IDX cannot hold an array of shape {array.shape}: sizes are uint32")
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(_TYPES[codes[native]]).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
