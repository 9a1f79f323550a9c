"""The IDX file format of MNIST and Fashion-MNIST, read strictly.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values. Images are magic 2051 (uint8, 3 dims:
N x rows x cols), labels 2049 (uint8, 1 dim: N). Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ValueError):
    """An IDX file that is truncated, corrupt, or not what was expected."""


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array of the shape its header gives.

    Args:
        path: the file.
        expected_magic: 2051 for images, 2049 for labels, or None to accept any IDX type.
    Returns:
        The values, shape from the header (e.g. (60000, 28, 28) uint8 images).
    Raises:
        IdxError: naming the file and what is wrong (bad gzip stream, wrong magic number,
        header dimensions that do not match the file length).
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxError(f"{path}: corrupt or truncated gzip data ({error})") from None
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _TYPES or ndim == 0:
        raise IdxError(f"{path}: not an IDX file (first bytes {raw[:4].hex()})")
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(expected_magic, "data")
        raise IdxError(
            f"{path}: magic number {magic}, expected {expected_magic} ({kind}); "
            "is this the right file?"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxError(f"{path}: header cut short ({len(raw)} of {header_size} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[type_code])
    expected = header_size + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        shape = " x ".join(map(str, dims))
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise IdxError(
            f"{path}: {state}: the header promises {shape} values ({expected} bytes), "
            f"the file holds {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    uint8 arrays of 3 dims get magic 2051 (images), of 1 dim 2049 (labels), as MNIST's files.
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX cannot hold an array of dtype {array.dtype} and {array.ndim} dims")
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(_TYPES[codes[native]]).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
