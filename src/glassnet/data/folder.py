"""``ImageFolder``: a folder per class of image files, as torchvision's ``ImageFolder``.

    root/cat/001.png
    root/cat/more/002.jpg      (images may sit in subfolders of a class folder)
    root/dog/003.bmp

The classes are the sorted names of root's subfolders; class ``i`` is ``classes[i]``. A class's
images are the files under its folder whose first bytes show PNG, JPEG or BMP, sorted by path;
hidden files and folders (names starting with ".") and other files are skipped. Images are
read by :func:`glassnet.data.read_image` (any mode and bit depth, a pixel limit) when first
indexed, and with ``cache=True`` kept in memory as uint8, so later epochs decode nothing.
Shapes: N batch, C channels (1 grey or 3 RGB), H, W spatial; batches are NCHW.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from glassnet.data.images import DECODE_ERRORS, image_format, read_image
from glassnet.data.text import printable

_KINDS = ("PNG", "JPEG", "BMP")
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})


class ImageFolder:
    """Images in one subfolder per class, as a dataset: ``ds[indices] -> (x, y)``.

    Args:
        root: the folder of class folders.
        image_size: (H, W) or an int for square images: every image is resized to it (Lanczos).
            Without it all images must be the size of the first, else indexing a different
            one raises ValueError naming both files.
        channels: 1 (grey) or 3 (RGB). Default: 1 if the first image is grey (Pillow mode 1, L,
            LA, I or I;16), else 3; images of the other kind are converted.
        cache: keep decoded images (uint8, C x H x W bytes each) for later accesses.
    Returns (from ``ds[indices]``, indices a 1-D integer array):
        x (N, C, H, W) float32 in [0, 1], exactly ``uint8 / np.float32(255)`` as
        :func:`glassnet.data.load` gives for IDX files; y (N,) int64 class indices.
    Deviation: pixels are kept at 8 bits, as torchvision's and Keras's loaders keep them; a
    16-bit image is rounded to 8 bits (:func:`glassnet.data.read_images` keeps all 16).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        cache: bool = True,
    ) -> None:
        self.image_size = _check_image_size(image_size)
        if channels is not None and (type(channels) is not int or channels not in (1, 3)):
            raise ValueError(f"channels={channels!r} must be 1 (grey), 3 (RGB) or None (guess)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root {printable(root)} is not a folder (of one folder per class)")
        self.classes, self.paths, targets = _scan(self.root)
        self.targets = np.array(targets, dtype=np.int64)
        first_size, first_mode = _header(self.paths[0])
        if channels is None:
            channels = 1 if first_mode in _GREY_MODES else 3
        self.sample_shape = (channels, *(self.image_size or first_size))
        self._pixels = np.empty((len(self), *self.sample_shape), np.uint8) if cache else None
        self._cached = np.zeros(len(self), dtype=bool)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = self._check_indices(indices)
        if self._pixels is None:
            pixels = np.empty((len(indices), *self.sample_shape), np.uint8)
            for row, index in enumerate(indices):
                pixels[row] = self._decode(index)
        else:
            for index in np.unique(indices[~self._cached[indices]]):  # in file order
                self._pixels[index] = self._decode(index)
                self._cached[index] = True
            pixels = self._pixels[indices]
        # the expression glassnet.data.load uses for IDX images: the same float32 values
        x = (pixels / np.float32(255)).astype(np.float32, copy=False)
        return x, self.targets[indices]

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root='{printable(self.root)}', {len(self)} images, "
            f"{len(self.classes)} classes, sample_shape={self.sample_shape})"
        )

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(
                f"indices of dtype {indices.dtype} and shape {indices.shape} must be a 1-D "
                "integer array"
            )
        indices = indices.astype(np.int64, copy=False)
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            bad = indices[(indices < -n) | (indices >= n)][0]
            raise IndexError(f"index {bad} is out of range for {n} images")
        return np.where(indices < 0, indices + n, indices)

    def _decode(self, index: int) -> np.ndarray:
        """Image ``index`` as (C, H, W) uint8, checked against the first image's size."""
        path = self.paths[index]
        if self.image_size is None:
            size, _ = _header(path)
            if size != self.sample_shape[1:]:
                first = self.sample_shape[1:]
                raise ValueError(
                    f"{printable(path)} is {size[0]} x {size[1]} pixels (H x W) but "
                    f"{printable(self.paths[0])} is {first[0]} x {first[1]}: give "
                    "image_size=(H, W) to resize every image to one size"
                )
        pixels = read_image(path, self.sample_shape)[0]
        # read_image gives float32(v) / 255 for 8-bit v: times 255 and rounded, exactly v again
        return np.rint(pixels * np.float32(255)).astype(np.uint8)


def _check_image_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size
        )
    ):
        raise ValueError(
            f"image_size={image_size!r} must be (H, W) or one int, positive, or None to keep "
            "the images' own size"
        )
    return int(size[0]), int(size[1])


def _scan(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """The sorted class names, every image path (class by class) and its class index."""
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{printable(root)} holds no class folders: put each class's images in a folder "
            "of its own (root/cat/1.png, root/dog/2.png, ...)"
        )
    paths: list[Path] = []
    targets: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(_images_under(root / name))
        if not found:
            raise ValueError(
                f"class folder {printable(root / name)} holds no PNG, JPEG or BMP images"
            )
        paths += found
        targets += [label] * len(found)
    return classes, paths, targets


def _images_under(folder: Path) -> list[Path]:
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            path = Path(directory, name)
            if not name.startswith(".") and image_format(path) in _KINDS:
                found.append(path)
    return found


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(H, W) and Pillow mode of an image, from its header: no pixel is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # a huge canvas is refused by read_image's own limit, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_KINDS) as image:
                return (image.height, image.width), image.mode
    except (*DECODE_ERRORS, Image.DecompressionBombError):
        read_image(path)  # raises the reason (corrupt, too many pixels), naming the file
        raise ValueError(f"{printable(path)}: an image Pillow cannot open") from None
