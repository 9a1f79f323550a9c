"""Random changes to training images: ``augment(x, rng) -> x`` for ``glassnet.fit``.

An augmentation takes a batch x (N, C, H, W) (or (N, H, W)) and the run's Generator, and returns
a new array of x's shape and dtype; x itself is never changed. ``fit(..., augment=...)``
applies it to training batches only, and every draw comes from the run's Generator, so a
seeded run (and a resumed one) makes the same draws.

>>> augment = Compose(RandomShift(2), RandomFlip())
>>> augment
Compose(RandomShift(max_shift=2), RandomFlip(horizontal=True, vertical=False))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _check_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    x = np.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"x of shape {x.shape} must be a batch of images (N, C, H, W)")
    return x


class RandomShift:
    """Shift each image by whole pixels, filling with zeros.

    Each image gets its own (dy, dx), uniform integers in [-max_shift, max_shift], drawn as
    ``rng.integers(-max_shift, max_shift + 1, size=(N, 2))``: pixel (i, j) moves to
    (i + dy, j + dx), and what leaves the image is lost. Matches Keras's
    ``RandomTranslation(fill_mode="constant")`` with whole-pixel shifts.

    >>> x = np.zeros((1, 1, 5, 5), np.float32); x[0, 0, 2, 2] = 1
    >>> rng = np.random.default_rng(0)
    >>> dy, dx = np.random.default_rng(0).integers(-2, 3, size=(1, 2))[0]
    >>> y = RandomShift(2)(x, rng)
    >>> y[0, 0, 2 + dy, 2 + dx], y.sum()
    (np.float32(1.0), np.float32(1.0))
    """

    def __init__(self, max_shift: int = 2) -> None:
        if type(max_shift) is not int or max_shift < 0:
            raise ValueError(f"max_shift={max_shift!r} must be a non-negative int (pixels)")
        self.max_shift = max_shift

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _check_batch(x, rng)
        m = self.max_shift
        shifts = rng.integers(-m, m + 1, size=(len(x), 2))
        height, width = x.shape[-2:]
        padded = np.zeros((*x.shape[:-2], height + 2 * m, width + 2 * m), dtype=x.dtype)
        padded[..., m : m + height, m : m + width] = x  # faster than np.pad
        # windows[n, ..., a, b] is the H x W view starting at (a, b): (N, ..., 2m+1, 2m+1, H, W)
        windows = sliding_window_view(padded, (height, width), axis=(-2, -1))
        # the window starting at (m - dy, m - dx) holds the image moved by (dy, dx)
        return windows[np.arange(len(x)), ..., m - shifts[:, 0], m - shifts[:, 1], :, :]

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"


class RandomFlip:
    """Flip each image left-right (and/or upside down) with probability 0.5.

    Draws ``rng.random(N) < 0.5`` per direction, horizontal first. As torchvision's
    ``RandomHorizontalFlip`` / Keras's ``RandomFlip("horizontal")``. Not for digits or text,
    whose mirror images are other shapes (or other classes: a flipped 2 is no 2); for photos
    of objects, clothes and the like.
    """

    def __init__(self, horizontal: bool = True, vertical: bool = False) -> None:
        if not isinstance(horizontal, bool) or not isinstance(vertical, bool):
            raise ValueError(f"{horizontal=} and {vertical=} must be bools")
        if not (horizontal or vertical):
            raise ValueError("horizontal=False and vertical=False flips nothing: enable one")
        self.horizontal, self.vertical = horizontal, vertical

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = _check_batch(x, rng).copy()
        if self.horizontal:
            flip = rng.random(len(out)) < 0.5
            out[flip] = out[flip, ..., ::-1]
        if self.vertical:
            flip = rng.random(len(out)) < 0.5
            out[flip] = out[flip, ..., ::-1, :]
        return out

    def __repr__(self) -> str:
        return f"RandomFlip(horizontal={self.horizontal}, vertical={self.vertical})"


class Compose:
    """The augmentations applied in order, each to the last one's output."""

    def __init__(self, *augmentations: Augmentation) -> None:
        for augmentation in augmentations:
            if not callable(augmentation):
                raise TypeError(
                    f"Compose takes augment(x, rng) -> x callables, got "
                    f"{type(augmentation).__name__}"
                )
        self.augmentations = augmentations

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for augmentation in self.augmentations:
            x = augmentation(x, rng)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.augmentations))})"
