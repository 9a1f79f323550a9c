"""Datasets (MNIST, Fashion-MNIST, image folders, .npz, IDX), image files, augmentation."""

from glassnet.data.augment import Compose, RandomFlip, RandomShift
from glassnet.data.dataset import ArrayDataset, Dataset, Subset, as_dataset
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
from glassnet.data.folder import ImageFolder
from glassnet.data.idx import IdxError, read_idx, write_idx
from glassnet.data.images import image_format, read_image, read_images
from glassnet.data.loader import batches, validation_split
from glassnet.data.sources import load_idx_folder, load_npz, open_data
from glassnet.data.text import printable

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "MNIST",
    "ArrayDataset",
    "Compose",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "IdxError",
    "ImageFolder",
    "RandomFlip",
    "RandomShift",
    "Subset",
    "as_dataset",
    "batches",
    "fashion_mnist",
    "image_format",
    "load",
    "load_idx_folder",
    "load_npz",
    "mnist",
    "open_data",
    "printable",
    "read_idx",
    "read_image",
    "read_images",
    "validation_split",
    "write_idx",
]
