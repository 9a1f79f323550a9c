"""What ``glassnet.fit`` trains on: a dataset is anything with ``len()`` and batch indexing.

``dataset[indices]`` takes a 1-D integer array and returns ``(x, y)`` for those samples, as
arrays with the batch first: (N, C, H, W) images or (N, D) features, and (N,) class indices or
(N, ...) regression targets. :class:`ArrayDataset` wraps arrays in memory; ``ImageFolder``
reads image files; :class:`Subset` is a view of some samples (a validation split).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Dataset(Protocol):
    """The protocol: ``len(ds)`` samples, ``ds[indices] -> (x, y)`` for an index array."""

    def __len__(self) -> int: ...

    def __getitem__(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ArrayDataset:
    """Arrays in memory: ``x`` (N, ...) and ``y`` (N, ...), indexed together.

    >>> ds = ArrayDataset(np.zeros((5, 2)), np.arange(5))
    >>> len(ds), ds[np.array([4, 0])][1]
    (5, array([4, 0]))
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"x and y need a batch axis, got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[indices], self.y[indices]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


class Subset:
    """The samples of ``dataset`` at ``indices`` (in that order), as a dataset of its own."""

    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset[self.indices[indices]]

    def __getattr__(self, name: str) -> Any:  # sample_shape, classes, ... of the whole
        return getattr(self.__dict__["dataset"], name)


def as_dataset(data: Any, name: str = "data") -> Dataset:
    """``data`` as a dataset: an ``(x, y)`` pair of arrays, or a dataset already."""
    if isinstance(data, tuple) and len(data) == 2:
        return ArrayDataset(*data)
    if isinstance(data, Dataset) and not isinstance(data, (list, tuple, str, bytes, np.ndarray)):
        return data
    raise TypeError(
        f"{name} must be an (x, y) pair of arrays or a glassnet.data dataset "
        f"(len() and ds[indices] -> (x, y)), got {type(data).__name__}"
    )


def validation_cut(n: int, fraction: float) -> int:
    """Where the last ``fraction`` of ``n`` samples begins (Keras's ``validation_split``)."""
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"val_fraction={fraction!r} must be in [0, 1)")
    cut = n - round(n * fraction)
    if cut == 0 and n:
        raise ValueError(
            f"val_fraction={fraction!r} leaves no training samples of {n}: use a smaller fraction"
        )
    return cut


def split_last(dataset: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """The last ``fraction`` of the samples as validation data, as Keras's ``validation_split``."""
    n = len(dataset)
    cut = validation_cut(n, fraction)
    every = np.arange(n)
    return Subset(dataset, every[:cut]), Subset(dataset, every[cut:])
