"""IDX files built to hurt: huge headers, gzip bombs, truncation, no images, hostile names."""

import gzip
import tracemalloc

import numpy as np
import pytest

import glassnet
from glassnet.cli import main
from glassnet.data import IdxError, read_idx, write_idx
from glassnet.nn import convnet

MB = 1 << 20


def header(dims, type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def refused(path, match: str) -> tuple[str, int]:
    """The IdxError message read_idx raises on ``path``, and its peak allocation in bytes."""
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match=match) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(info.value), peak


@pytest.mark.parametrize(
    "dims,type_code",
    [((2**32 - 1,) * 3, 0x08), ((2**31, 2**31), 0x0E), ((2**16,) * 5, 0x0B)],
)
def test_a_header_whose_size_overflows_is_refused_before_any_allocation(tmp_path, dims, type_code):
    path = tmp_path / "huge.idx"
    path.write_bytes(header(dims, type_code) + bytes(16))
    with pytest.raises(IdxError, match="more than an array can hold") as info:
        read_idx(path)
    assert str(path) in str(info.value) and " x ".join(map(str, dims)) in str(info.value)


def test_a_raw_file_shorter_than_its_header_is_refused_unread(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(header((1 << 20, 1 << 10, 1 << 10)) + bytes(100))  # promises 1 TiB
    message, peak = refused(path, "truncated")
    expected = 16 + (1 << 40)
    assert (
        f"({expected} bytes), the file holds 116 bytes ({expected - 116} bytes missing)" in message
    )
    assert peak < MB


def test_truncated_files_name_the_missing_byte_count(tmp_path):
    raw = header((4, 28, 28)) + bytes(4 * 28 * 28)
    (tmp_path / "cut.idx").write_bytes(raw[:-100])
    with pytest.raises(IdxError, match=r"cut\.idx: truncated: .* \(100 bytes missing\)"):
        read_idx(tmp_path / "cut.idx")
    (tmp_path / "cut.idx.gz").write_bytes(gzip.compress(raw[:30]))  # a whole gzip, short data
    message = f"the file inflates to 30 bytes \\({len(raw) - 30} bytes missing\\)"
    with pytest.raises(IdxError, match=message):
        read_idx(tmp_path / "cut.idx.gz")
    (tmp_path / "head.idx").write_bytes(raw[:9])
    with pytest.raises(IdxError, match=r"header cut short \(9 of 16 bytes\)"):
        read_idx(tmp_path / "head.idx")


def test_a_gzip_bomb_promising_little_is_refused_after_inflating_that_little(tmp_path):
    # 10 images promised, then ~800 MB of zeros: concatenated gzip members are one stream.
    promised = header((10, 28, 28)) + bytes(10 * 28 * 28)
    zeros = gzip.compress(bytes(MB), compresslevel=9)
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(promised) + zeros * 800)
    assert path.stat().st_size < MB
    message, peak = refused(path, "longer than its header says")
    assert str(path) in message and "10 x 28 x 28 values (7856 bytes)" in message
    assert peak < 4 * MB  # inflating it all took 800 MB


def test_a_gzip_file_promising_more_than_deflate_can_hold_is_refused_uninflated(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(header((1000, 1000, 1000)) + bytes(4096)))
    size = path.stat().st_size
    with pytest.raises(IdxError, match=f"a gzip file of {size} bytes inflates to at most"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_an_idx_file_of_no_images_is_valid(tmp_path, suffix):
    path = tmp_path / f"none.idx{suffix}"
    write_idx(path, np.zeros((0, 28, 28), np.uint8))
    images = read_idx(path, expected_magic=2051)
    assert images.shape == (0, 28, 28) and images.dtype == np.uint8
    write_idx(path, np.zeros(0, np.uint8))
    assert read_idx(path, expected_magic=2049).shape == (0,)


def test_big_endian_values_come_back_native_and_writable(tmp_path):
    array = np.array([[-2, 300], [7, -32768]], dtype=np.int16)
    write_idx(tmp_path / "a.idx", array)
    back = read_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np.int16 and back.dtype.isnative and back.flags.writeable


def test_a_hostile_file_name_is_escaped_in_the_error(tmp_path):
    path = tmp_path / "evil\x1b[2J\n.idx"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(IdxError) as info:
        read_idx(path)
    message = str(info.value)
    assert "\x1b" not in message and "\n" not in message and "evil\\x1b[2J\\n.idx" in message


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    glassnet.save_model(convnet(rng=np.random.default_rng(0)), path, input_shape=(1, 28, 28))
    return path


def test_predict_says_an_idx_file_holds_no_images(tmp_path, model_file, capsys):
    write_idx(tmp_path / "none.idx", np.zeros((0, 28, 28), np.uint8))
    write_idx(tmp_path / "one.idx", np.zeros((1, 28, 28), np.uint8))
    argv = ["predict", str(model_file), str(tmp_path / "none.idx"), str(tmp_path / "one.idx")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'none.idx'}: holds no images"
    assert lines[1].startswith(f"{tmp_path / 'one.idx'}: ") and len(lines) == 2


def test_predict_refuses_a_gzip_bomb_with_a_message(tmp_path, model_file, capsys):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(header((1, 28, 28)) + bytes(784 + 50 * MB)))
    with pytest.raises(SystemExit) as info:
        main(["predict", str(model_file), str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"glassnet predict: error: {path}: longer than its header says")
