"""Training data from a path: image folders, a ``.npz`` file or a folder of IDX files.

:func:`open_data` decides by what the path is (``glassnet train --data PATH``):

- a folder with ``train/`` (and optionally ``test/``), each one folder per class of images
  -> :class:`~glassnet.data.folder.ImageFolder` s;
- a folder holding MNIST's IDX file names -> :func:`load_idx_folder`;
- a ``.npz`` file with ``x_train``, ``y_train`` (and ``x_test``, ``y_test``) as Keras's
  ``mnist.npz`` -> :func:`load_npz`.
Shapes: N samples, C channels, H, W spatial; images come out NCHW float32 in [0, 1].
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from glassnet.data.dataset import ArrayDataset, Dataset
from glassnet.data.datasets import MNIST, existing_file, read_split
from glassnet.data.folder import ImageFolder
from glassnet.data.text import printable

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = (
    "  - a folder with train/ (and optionally test/) holding one folder of images per class\n"
    "  - a folder of IDX files named as MNIST's (train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-...)\n"
    "  - a .npz file with arrays x_train, y_train (and x_test, y_test), as Keras's mnist.npz"
)


def open_data(
    path: str | os.PathLike, *, image_size: int | tuple[int, int] | None = None
) -> tuple[Dataset, Dataset | None, str]:
    """``(train, test or None, description)`` from the data at ``path`` (see the module doc).

    ``image_size`` (H, W) resizes image folders' images (see ImageFolder); it is refused for
    arrays. The test folder is read with the train folder's channels and must give its sample
    shape and classes.
    Raises:
        ValueError: naming the path: none of the accepted layouts, or a layout's own errors.
    """
    path = Path(path)
    name = printable(path)
    if path.is_dir() and (path / "train").is_dir():
        return _open_folders(path, image_size)
    is_idx = path.is_dir() and _idx_pair(path, "train") is not None
    is_npz = path.is_file() and path.suffix.lower() == ".npz"
    if (is_idx or is_npz) and image_size is not None:
        raise ValueError(
            f"image_size={image_size!r} resizes image folders; {name} holds arrays of one size"
        )
    if is_idx:
        train, test = load_idx_folder(path)
        return train, test, _describe("IDX files in " + name, train, test)
    if is_npz:
        train, test = load_npz(path)
        return train, test, _describe(name, train, test)
    what = "a folder" if path.is_dir() else "a file" if path.is_file() else "not found"
    hint = ""
    if path.is_dir() and any(entry.is_dir() for entry in path.iterdir()):
        hint = f"\n(a folder of class folders? move them into {name}/train/)"
    raise ValueError(f"{name} ({what}) is none of the accepted data layouts:\n{LAYOUTS}{hint}")


def _open_folders(
    path: Path, image_size: int | tuple[int, int] | None
) -> tuple[ImageFolder, ImageFolder | None, str]:
    train = ImageFolder(path / "train", image_size=image_size)
    test = None
    if (path / "test").is_dir():
        test = ImageFolder(path / "test", image_size=image_size, channels=train.sample_shape[0])
        if test.classes != train.classes:
            only_train = sorted(set(train.classes) - set(test.classes))
            only_test = sorted(set(test.classes) - set(train.classes))
            raise ValueError(
                f"{printable(path / 'test')} must hold the classes of {printable(path / 'train')}"
                f": only in train: {_names(only_train) or 'none'}; only in test: "
                f"{_names(only_test) or 'none'}"
            )
        if test.sample_shape != train.sample_shape:
            raise ValueError(
                f"{printable(path / 'test')} has images of shape {test.sample_shape}, "
                f"{printable(path / 'train')} {train.sample_shape}: give image_size=(H, W)"
            )
    return train, test, _describe(f"image folders in {printable(path)}", train, test)


def _names(names: list[str]) -> str:
    return ", ".join(printable(n) for n in names)


def _describe(source: str, train: Dataset, test: Dataset | None) -> str:
    shape = "x".join(map(str, train.sample_shape))
    text = f"{source}: {len(train)} training samples of {shape}"
    text += f", {len(test)} test samples" if test is not None else ", no test set"
    classes = getattr(train, "classes", None)
    if classes is not None:
        shown = _names(classes[:10]) + (", ..." if len(classes) > 10 else "")
        text += f"; {len(classes)} classes: {shown}"
    return text


def load_npz(path: str | os.PathLike) -> tuple[ArrayDataset, ArrayDataset | None]:
    """``(train, test or None)`` from a ``.npz`` holding x_train, y_train (x_test, y_test).

    Images: (N, H, W), (N, H, W, C) or (N, C, H, W), returned NCHW. A 4-D array is taken as
    channels-last when its last axis is 1 or 3 and its second is not. uint8 pixels become
    ``x / np.float32(255)``, float pixels float32 as they are; (N, D) features stay (N, D).
    Labels: (N,) or (N, 1) integers >= 0, returned (N,) int64.
    The file is read with ``allow_pickle=False``: object arrays are refused, no code runs.
    """
    name = printable(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = printable(str(error))
        raise ValueError(f"{name}: not a readable .npz archive of arrays ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: a single .npy array, expected a .npz archive of arrays")
    with archive:
        keys = sorted(archive.files)
        arrays = {key: _npz_array(archive, key, name) for key in _NPZ_KEYS if key in keys}
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise ValueError(
                f"{name} has no array {key!r} (it holds {_names(keys) or 'none'}); expected "
                "x_train, y_train and optionally x_test, y_test"
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{name} holds one of x_test and y_test: give both or neither")
    train = _npz_split(arrays["x_train"], arrays["y_train"], name, "train")
    if "x_test" not in arrays:
        return train, None
    test = _npz_split(arrays["x_test"], arrays["y_test"], name, "test")
    if test.sample_shape != train.sample_shape:
        raise ValueError(
            f"{name}: x_test samples have shape {test.sample_shape}, x_train's {train.sample_shape}"
        )
    return train, test


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = printable(str(error))
        raise ValueError(f"{name}: array {key!r} cannot be read ({reason})") from None


def _npz_split(x: np.ndarray, y: np.ndarray, name: str, split: str) -> ArrayDataset:
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name}: x_{split} has shape {x.shape}, expected images (N, H, W), (N, H, W, C), "
            "(N, C, H, W) or features (N, D)"
        )
    if x.dtype == np.uint8:
        x = (x / np.float32(255)).astype(np.float32, copy=False)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
    else:
        raise ValueError(f"{name}: x_{split} has dtype {x.dtype}, expected uint8 or float pixels")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC -> NCHW
    if y.ndim == 2 and y.shape[1] == 1:  # Keras's CIFAR-10 labels are (N, 1)
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: y_{split} has dtype {y.dtype} and shape {y.shape}, expected (N,) integer "
            "class indices"
        )
    if y.size and y.min() < 0:
        raise ValueError(f"{name}: y_{split} holds label {y.min()}, expected labels >= 0")
    if len(x) != len(y):
        raise ValueError(f"{name}: x_{split} holds {len(x)} samples but y_{split} {len(y)}")
    return ArrayDataset(x, y.astype(np.int64))


def _idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in ``folder``, None if neither is there."""
    names = MNIST.files[split]
    found = [existing_file(folder, filename) for filename in names]
    if not any(found):
        return None
    if not all(found):
        missing = names[found.index(None)].removesuffix(".gz")
        raise ValueError(
            f"{printable(folder)} has no {missing}[.gz] to go with the other {split} file"
        )
    return found[0], found[1]


def load_idx_folder(path: str | os.PathLike) -> tuple[ArrayDataset, ArrayDataset | None]:
    """``(train, test or None)`` from a folder of IDX files named as MNIST's.

    ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (each raw or ``.gz``) are
    needed, ``t10k-...`` give the test set. Images (N, 1, H, W) float32 ``x / np.float32(255)``
    and labels (N,) int64, as :func:`glassnet.data.load` reads them.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{printable(path)} is not a folder")
    splits = {split: _idx_pair(folder, split) for split in ("train", "test")}
    if splits["train"] is None:
        names = " and ".join(MNIST.files["train"])
        raise ValueError(f"{printable(path)} holds no {names} (or uncompressed)")
    train = _read_idx_split(*splits["train"])
    test = None if splits["test"] is None else _read_idx_split(*splits["test"])
    if test is not None and test.sample_shape != train.sample_shape:
        raise ValueError(
            f"{printable(path)}: test images have shape {test.sample_shape}, training images "
            f"{train.sample_shape}"
        )
    return train, test


def _read_idx_split(images_path: Path, labels_path: Path) -> ArrayDataset:
    return ArrayDataset(*read_split(images_path, labels_path))
