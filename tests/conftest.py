"""Shared fixtures: small synthetic IDX datasets that a convnet can actually learn."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from glassnet.data import write_idx

# Two shared cores: a property test's wall time says nothing about the code under test.
settings.register_profile("glassnet", deadline=None)
settings.load_profile("glassnet")


def make_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28 x 28 uint8 images whose class (0-9) is the position of a bright 6 x 6 square."""
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        row, col = divmod(int(label), 5)
        image[2 + 12 * row : 8 + 12 * row, 1 + 5 * col : 7 + 5 * col] = 250
    return images, labels


def write_dataset(directory: Path, n_train: int = 640, n_test: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make_images(n, rng)
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A directory with MNIST-named IDX files: 640 training and 200 test images."""
    return write_dataset(tmp_path / "data")


@pytest.fixture
def tiny_arrays():
    """(x_train, y_train, x_test, y_test) float32/int64, the same images as tiny_dataset."""
    rng = np.random.default_rng(0)
    arrays = []
    for n in (640, 200):
        images, labels = make_images(n, rng)
        arrays += [(images[:, None] / np.float32(255)).astype(np.float32), labels.astype(np.int64)]
    return tuple(arrays)
