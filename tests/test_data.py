"""The IDX reader, dataset lookup, verified downloads from a local server, and minibatches."""

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from glassnet.data import (
    FASHION_MNIST,
    MNIST,
    DatasetNotFoundError,
    DatasetSpec,
    IdxError,
    batches,
    load,
    mnist,
    read_idx,
    validation_split,
    write_idx,
)
from glassnet.data.datasets import download_file, search_dirs

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([3, 1, 4], dtype=np.uint8),
        np.linspace(0, 1, 6).reshape(2, 3),
    ],
)
def test_idx_round_trip(tmp_path, suffix, array):
    path = tmp_path / f"x.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_idx_errors_say_what_is_wrong(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    good = tmp_path / "images.idx"
    write_idx(good, images)
    raw = good.read_bytes()

    (tmp_path / "short").write_bytes(raw[:-100])
    with pytest.raises(IdxError, match=r"truncated: the header promises 4 x 28 x 28"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(IdxError, match="longer than its header says"):
        read_idx(tmp_path / "long")
    with pytest.raises(IdxError, match="magic number 2051, expected 2049"):
        read_idx(good, expected_magic=2049)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04not idx at all")
    with pytest.raises(IdxError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-30])
    with pytest.raises(IdxError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST test files not present")
def test_real_mnist_test_set_and_labels():
    x, y = mnist("test", data_dir=SHARED_MNIST, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0
    assert y.dtype == np.int64 and np.bincount(y).tolist()[:3] == [980, 1135, 1032]
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    labels = read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz", expected_magic=2049)
    assert labels.shape == (60000,) and np.bincount(labels).sum() == 60000
    # The shared files are the originals: their SHA-256 is the pinned one.
    for name in (
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ):
        assert hashlib.sha256((SHARED_MNIST / name).read_bytes()).hexdigest() == MNIST.sha256[name]


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debians_package(tmp_path, monkeypatch):
    monkeypatch.delenv("GLASSNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: Debian's copy is next
    x, y = load("fashion-mnist", "train", download=False)
    assert x.shape == (60000, 1, 28, 28) and np.bincount(y).tolist() == [6000] * 10
    x, y = load("fashion-mnist", "test", download=False)
    assert x.shape == (10000, 1, 28, 28) and np.bincount(y).tolist() == [1000] * 10
    assert 0.28 < x.mean() < 0.29  # Fashion-MNIST's well-known mean pixel, 0.286


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSNET_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dirs = search_dirs(FASHION_MNIST, tmp_path / "explicit")
    assert dirs == [
        tmp_path / "explicit",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "cache" / "glassnet" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    monkeypatch.delenv("GLASSNET_DATA")
    assert search_dirs(MNIST) == [tmp_path / "cache" / "glassnet" / "mnist"]


def test_env_dir_is_used_before_the_cache(tmp_path, monkeypatch, tiny_dataset):
    env = tmp_path / "env"
    env.mkdir()
    tiny_dataset.rename(env / "mnist")
    monkeypatch.setenv("GLASSNET_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    x, _ = load("mnist", "test", download=False)
    assert x.shape == (200, 1, 28, 28)


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving _Files.files; yields its base URL."""
    _Files.files, _Files.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def dead_mirror() -> str:
    """A loopback URL where nothing listens (connection refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


def test_download_skips_dead_and_corrupt_mirrors(tmp_path, server):
    good = b"the real bytes" * 1000
    digest = hashlib.sha256(good).hexdigest()
    _Files.files = {"/bad/f.gz": good[:-1] + b"X", "/good/f.gz": good}
    mirrors = [dead_mirror(), f"{server}/bad/", f"{server}/missing/", f"{server}/good/"]
    path = download_file("f.gz", digest, mirrors, tmp_path)
    assert path == tmp_path / "f.gz" and path.read_bytes() == good
    assert _Files.requests == ["/bad/f.gz", "/missing/f.gz", "/good/f.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz"]  # no temporary files left


def test_download_never_keeps_a_file_that_failed_its_checksum(tmp_path, server):
    _Files.files = {"/m/f.gz": b"tampered"}
    with pytest.raises(OSError) as info:
        download_file("f.gz", "0" * 64, [f"{server}/m/", dead_mirror()], tmp_path)
    message = str(info.value)
    assert "SHA-256" in message and "does not match" in message and "127.0.0.1" in message
    assert list(tmp_path.iterdir()) == []


def test_load_downloads_verifies_and_then_reads(tmp_path, server, monkeypatch, tiny_dataset):
    monkeypatch.delenv("GLASSNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    served = {name: (tiny_dataset / name).read_bytes() for name in names}
    _Files.files = {f"/mirror/{name}": body for name, body in served.items()}
    spec = DatasetSpec(
        name="tiny",
        files={"train": names},
        sha256={name: hashlib.sha256(body).hexdigest() for name, body in served.items()},
        mirrors=(dead_mirror(), f"{server}/mirror/"),
        classes=tuple("0123456789"),
    )
    x, y = load(spec, "train")
    assert x.shape == (640, 1, 28, 28) and y.shape == (640,)
    cached = tmp_path / "cache" / "glassnet" / "tiny"
    assert sorted(p.name for p in cached.iterdir()) == sorted(names)
    _Files.requests.clear()
    load(spec, "train")  # now from the cache: no request
    assert _Files.requests == []


def test_offline_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("GLASSNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = DatasetSpec(
        "nowhere",
        {"train": ("a.gz", "b.gz")},
        {"a.gz": "0" * 64, "b.gz": "0" * 64},
        (dead_mirror(),),
        tuple("0123456789"),
    )
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load(spec, "train", data_dir=tmp_path / "mine")
    message = str(info.value)
    for words in ["downloading failed", "--data-dir", "GLASSNET_DATA", str(tmp_path / "mine")]:
        assert words in message
    assert not any((tmp_path / "mine").iterdir())
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load(spec, "train", download=False)
    with pytest.raises(ValueError, match="split='val'"):
        load(spec, "val")


def test_batches_and_validation_split():
    x, y = np.arange(10).reshape(10, 1), np.arange(10)
    (xt, yt), (_, yv) = validation_split(x, y, 0.2)
    assert yt.tolist() == list(range(8)) and yv.tolist() == [8, 9]
    order = np.random.default_rng(0).permutation(8)
    got = [yb.tolist() for _, yb in batches(xt, yt, 3, order)]
    assert [len(b) for b in got] == [3, 3, 2]
    flat = [i for batch in got for i in batch]
    assert flat == order.tolist()
    assert [yb.tolist() for _, yb in batches(xt, yt, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    rest = [yb.tolist() for _, yb in batches(xt, yt, 3, order[6:])]  # the rest of an epoch
    assert rest == [order[6:].tolist()]
    with pytest.raises(ValueError, match="batch_size=0"):
        next(batches(xt, yt, 0))
    with pytest.raises(ValueError, match=r"fraction=1\.5"):
        validation_split(x, y, 1.5)
