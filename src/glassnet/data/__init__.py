"""Datasets (MNIST, Fashion-MNIST), the IDX format, and minibatches."""

from glassnet.data.datasets import (
    DATASETS,
    FASHION_MNIST,
    MNIST,
    DatasetNotFoundError,
    DatasetSpec,
    fashion_mnist,
    load,
    mnist,
)
from glassnet.data.idx import IdxError, read_idx, write_idx
from glassnet.data.loader import batches, validation_split

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "MNIST",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IdxError",
    "batches",
    "fashion_mnist",
    "load",
    "mnist",
    "read_idx",
    "validation_split",
    "write_idx",
]
