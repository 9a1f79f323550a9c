"""MNIST and Fashion-MNIST: find the files, or download and verify them.

Search order for a split's two files (images, labels; ``.gz`` or uncompressed):
  1. ``data_dir``, when given;
  2. ``$GLASSNET_DATA/<name>``;
  3. the user cache, ``$XDG_CACHE_HOME/glassnet/<name>`` (default ``~/.cache/glassnet/<name>``);
  4. Debian's package directory (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).
If none holds them, missing files are downloaded into the first of 1-3, trying each mirror in
turn. A download is streamed into a temporary file, its SHA-256 compared with the pinned
value, and only then renamed into place: a broken or tampered download is never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glassnet.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from glassnet.data.text import printable

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files come from and what they must hash to."""

    name: str
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file)
    sha256: dict[str, str]  # file -> hex digest of the file as served by the mirrors
    mirrors: tuple[str, ...]  # base URLs, tried in order
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = field(default=())


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MNIST = DatasetSpec(
    name="mnist",
    files=_IDX_FILES,
    sha256={
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    classes=tuple(str(digit) for digit in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    files=_IDX_FILES,
    sha256={
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


class DatasetNotFoundError(FileNotFoundError):
    """Neither a local copy nor a download could provide the files."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glassnet"


def search_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories looked in, in order (see the module docstring)."""
    dirs = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get("GLASSNET_DATA"):
        dirs.append(Path(os.environ["GLASSNET_DATA"]) / spec.name)
    dirs.append(cache_dir() / spec.name)
    dirs += [Path(d) for d in spec.system_dirs]
    return dirs


def existing_file(directory: Path, filename: str) -> Path | None:
    """``filename`` or its uncompressed twin (without ``.gz``) in ``directory``."""
    for candidate in (directory / filename, directory / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    filename: str, sha256: str, mirrors: Sequence[str], target_dir: Path, timeout: float = 30.0
) -> Path:
    """Fetch ``filename`` from the first mirror that serves it with the right SHA-256.

    The bytes go to a temporary file in ``target_dir``, renamed to ``filename`` only after the
    checksum matches, so a partial, corrupt or tampered download never takes the real name.
    Raises OSError listing what each mirror did.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target_dir)
        try:
            digest = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                for block in iter(lambda: response.read(1 << 16), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != sha256:
                failures.append(f"{url}: SHA-256 {digest.hexdigest()[:16]}... does not match")
                continue
            final = target_dir / filename
            os.replace(tmp_name, final)
            return final
        except (OSError, urllib.error.URLError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
    raise OSError(f"could not download {filename}:\n  " + "\n  ".join(failures))


def locate(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download_missing: bool = True,
) -> tuple[Path, Path]:
    """Paths of the (images, labels) files of ``split``, downloading them if allowed."""
    if split not in spec.files:
        raise ValueError(f"{split=} must be one of {tuple(spec.files)}")
    names = spec.files[split]
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFoundError(
            f"data_dir (--data-dir) {str(data_dir)!r} is not a directory: give one that holds "
            f"the {spec.name} files, or leave it out to use the usual places"
        )
    dirs = search_dirs(spec, data_dir)
    for directory in dirs:
        found = [existing_file(directory, name) for name in names]
        if all(found):
            return found[0], found[1]
    searched = "\n  ".join(map(str, dirs))
    hint = (
        f"Put {names[0]} and {names[1]} in one of:\n  {searched}\n"
        f"or pass data_dir (glassnet train --data-dir DIR), or set GLASSNET_DATA=DIR "
        f"(files in DIR/{spec.name})."
    )
    if not download_missing:
        raise DatasetNotFoundError(f"{spec.name} {split} files not found. {hint}")
    target = dirs[0]  # data_dir, else $GLASSNET_DATA/<name>, else the user cache
    paths = []
    for name in names:
        existing = existing_file(target, name)
        if existing is not None:
            paths.append(existing)
            continue
        try:
            paths.append(download_file(name, spec.sha256[name], spec.mirrors, target))
        except OSError as error:
            raise DatasetNotFoundError(
                f"{spec.name} {split} files not found, and downloading failed (offline?).\n"
                f"{error}\n{hint}"
            ) from None
    return paths[0], paths[1]


def load(
    spec: DatasetSpec | str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of one split."""
    spec = DATASETS[spec] if isinstance(spec, str) else spec
    images_path, labels_path = locate(spec, split, data_dir, download)
    x, y = read_split(images_path, labels_path)
    if y.size and y.max() >= len(spec.classes):
        raise ValueError(f"{labels_path}: label {y.max()} >= {len(spec.classes)} classes")
    return x, y


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An IDX images/labels pair: (N, 1, H, W) float32 ``uint8 / 255`` and (N,) int64."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{printable(images_path)} holds {len(images)} images but "
            f"{printable(labels_path)} {len(labels)} labels"
        )
    x = (images[:, None, :, :] / np.float32(255)).astype(np.float32)
    return x, labels.astype(np.int64)


def mnist(split: str = "train", data_dir=None, download: bool = True):
    """MNIST digits: ``(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)``."""
    return load(MNIST, split, data_dir, download)


def fashion_mnist(split: str = "train", data_dir=None, download: bool = True):
    """Fashion-MNIST: ``(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)``."""
    return load(FASHION_MNIST, split, data_dir, download)
