"""Datasets (MNIST, Fashion-MNIST), the IDX format, image files, and minibatches."""

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
from glassnet.data.images import image_format, read_image, read_images
from glassnet.data.loader import batches, validation_split
from glassnet.data.text import printable

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "MNIST",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IdxError",
    "batches",
    "fashion_mnist",
    "image_format",
    "load",
    "mnist",
    "printable",
    "read_idx",
    "read_image",
    "read_images",
    "validation_split",
    "write_idx",
]
