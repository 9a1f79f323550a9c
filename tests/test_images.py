"""Image files as input: formats by their bytes, every mode and bit depth, hostile files."""

import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

import glassnet
from glassnet.cli import main
from glassnet.data import image_format, read_image, read_images, write_idx
from glassnet.nn import convnet


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` black pixels, built row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor = zlib.compressobj(6)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then width bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize(
    "name,kind,params",
    [
        ("a.PNG", "PNG", {}),
        ("a.png.idx", "PNG", {}),
        ("scan.BMP", "BMP", {}),
        ("photo.idx", "BMP", {}),  # a BMP is no longer taken for an IDX file
        ("photo.jpeg", "JPEG", {"quality": 100}),
        ("t10k-images-idx3-ubyte", "JPEG", {"quality": 100}),
    ],
)
def test_the_format_comes_from_the_bytes_not_the_name(tmp_path, name, kind, params):
    pixels = noise((28, 28))
    Image.fromarray(pixels).save(tmp_path / name, format=kind, **params)
    assert image_format(tmp_path / name) == kind
    x = read_image(tmp_path / name)
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    atol = 0.05 if kind == "JPEG" else 0  # JPEG is lossy even at quality 100
    np.testing.assert_allclose(x[0, 0], pixels / 255, atol=atol)


def test_an_unknown_file_lists_what_is_accepted(tmp_path):
    (tmp_path / "notes.png").write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match=r"notes\.png: .*expected PNG, JPEG, BMP or IDX"):
        read_images(tmp_path / "notes.png", (1, 28, 28))
    with pytest.raises(ValueError, match="not a PNG, JPEG or BMP image"):
        read_image(tmp_path / "notes.png")


def test_sixteen_bit_grey_scales_to_one_without_saturating(tmp_path):
    values = np.array([[0, 300, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")  # "I;16" (or "I" from older Pillow)
    x = read_image(tmp_path / "deep.png", (1, 1, 4))
    np.testing.assert_allclose(x.ravel(), values.ravel() / 65535, rtol=1e-6)
    flat = Image.fromarray(np.full((8, 8), 300, np.uint16))
    flat.save(tmp_path / "flat.png")
    np.testing.assert_allclose(read_image(tmp_path / "flat.png", (3, 4, 4)), 300 / 65535, 1e-4)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L")) / 255


@pytest.mark.parametrize("invert", [False, True])
def test_transparent_pixels_are_background(tmp_path, invert):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (255, 255, 255, 0)  # transparent white
    rgba[0, 1] = (255, 255, 255, 255)  # opaque white
    rgba[0, 2] = (0, 0, 0, 0)  # transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png", (1, 1, 3), invert=invert)
    expected = [0.0, 0.0, 0.0] if invert else [0.0, 1.0, 0.0]
    np.testing.assert_allclose(x.ravel(), expected, atol=1e-6)
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png", (1, 1, 3), invert).ravel(), expected)


def test_palette_one_bit_and_cmyk_images(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "p.png")
    x = read_image(tmp_path / "p.png", (3, 1, 3))
    np.testing.assert_allclose(x[0, :, 0].T, [[0, 0, 0], [1, 0, 0], [0, 0, 1]])
    palette.save(tmp_path / "pt.png", transparency=1)  # entry 1 (red) is transparent
    x = read_image(tmp_path / "pt.png", (3, 1, 3))
    np.testing.assert_allclose(x[0, :, 0].T, [[0, 0, 0], [0, 0, 0], [0, 0, 1]])

    bits = Image.new("1", (3, 1))
    bits.putpixel((1, 0), 1)
    bits.save(tmp_path / "b.bmp")
    np.testing.assert_allclose(read_image(tmp_path / "b.bmp", (1, 1, 3)).ravel(), [0, 1, 0])

    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    np.testing.assert_allclose(read_image(tmp_path / "c.jpg", (3, 4, 4)), 1.0, atol=0.01)


def test_rgb_to_grey_and_grey_to_rgb(tmp_path):
    rgb = noise((5, 6, 3))
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png", (1, 5, 6))[0, 0], grey_of(rgb))
    x = read_image(tmp_path / "rgb.png", (3, 5, 6))
    np.testing.assert_allclose(x[0], rgb.transpose(2, 0, 1) / 255)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    x = read_image(tmp_path / "grey.png", (3, 5, 6), invert=True)
    np.testing.assert_allclose(x[0], np.repeat(1 - rgb[None, ..., 0] / 255, 3, axis=0), atol=1e-6)


def test_other_sizes_are_resized_with_lanczos(tmp_path):
    pixels = noise((56, 40))
    Image.fromarray(pixels).save(tmp_path / "big.png")
    x = read_image(tmp_path / "big.png")
    expected = np.asarray(Image.fromarray(pixels).resize((28, 28), Image.Resampling.LANCZOS))
    np.testing.assert_allclose(x[0, 0], expected / 255, atol=1 / 255 + 1e-6)
    assert 0 <= x.min() and x.max() <= 1  # Lanczos overshoot is clipped


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "BMP"])
def test_truncated_and_corrupt_images_name_the_file(tmp_path, kind):
    path = tmp_path / f"cut.{kind.lower()}"
    Image.fromarray(noise((64, 64, 3))).save(path, format=kind)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=f"cut.{kind.lower()}: truncated or corrupt {kind} image"):
        read_image(path)
    path.write_bytes(raw[:12] + b"\xff" * 40)
    with pytest.raises(ValueError, match=f"cut.{kind.lower()}: .*corrupt {kind} image"):
        read_image(path)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_of_zeros(30000, 30000))  # 900 megapixels in ~110 KB
    assert path.stat().st_size < 200_000
    limit = Image.MAX_IMAGE_PIXELS
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError) as info:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: a PNG image of 30000 x 30000 = 900000000 pixels")
    assert type(info.value) is ValueError  # ours, not PIL's DecompressionBombError
    assert peak < 1 << 20 and time.perf_counter() - start < 1
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's process-wide limit is left alone


def test_the_pixel_limit_is_per_call(tmp_path):
    Image.fromarray(noise((28, 28))).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match="28 x 28 = 784 pixels, more than the 783 allowed"):
        read_image(tmp_path / "x.png", max_pixels=783)
    assert read_image(tmp_path / "x.png", max_pixels=784).shape == (1, 1, 28, 28)


@pytest.mark.parametrize("shape", [(2, 28, 28), (1, 28), (3, 0, 28)])
def test_an_input_shape_images_cannot_have(tmp_path, shape):
    Image.fromarray(noise((28, 28))).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"input shape \(1 or 3, H, W\)"):
        read_image(tmp_path / "x.png", shape)


def test_idx_files_come_back_nchw_and_must_fit_the_shape(tmp_path):
    images = noise((3, 28, 28))
    write_idx(tmp_path / "x.idx.gz", images)
    x = read_images(tmp_path / "x.idx.gz", (1, 28, 28), invert=True)
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], 1 - images / 255, atol=1e-6)
    with pytest.raises(ValueError, match=r"x\.idx\.gz holds images of shape \(1, 28, 28\)"):
        read_images(tmp_path / "x.idx.gz", (1, 14, 14))


# --- glassnet predict ---------------------------------------------------------------------------

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def model_file(tmp_path, classes=CLASSES):
    path = tmp_path / "m.safetensors"
    model = convnet(rng=np.random.default_rng(0))
    glassnet.save_model(model, path, input_shape=(1, 28, 28), classes=classes)
    return str(path)


def test_predict_reads_png_jpeg_and_bmp(tmp_path, capsys):
    files = []
    for name in ("a.PNG", "b.jpg", "c.bmp"):
        Image.fromarray(noise((40, 40, 3))).save(tmp_path / name)
        files.append(str(tmp_path / name))
    assert main(["predict", model_file(tmp_path), *files, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == files
    assert all(line.count(" 0.") == 2 for line in lines)


@pytest.mark.parametrize(
    "option,value,words",
    [
        ("--top", "0", "argument --top: '0' is not an integer >= 1"),
        ("--top", "-2", "argument --top: '-2' is not an integer >= 1"),
        ("--limit", "-1", "argument --limit: '-1' is not an integer >= 0"),
        ("--top", "three", "argument --top: 'three' is not an integer >= 1"),
    ],
)
def test_predict_refuses_counts_below_their_minimum(tmp_path, capsys, option, value, words):
    with pytest.raises(SystemExit) as info:
        main(["predict", "m.safetensors", "x.png", option, value])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_predict_clamps_top_to_the_class_count_and_limit_zero_only_counts(tmp_path, capsys):
    write_idx(tmp_path / "x.idx", noise((2, 28, 28)))
    path = model_file(tmp_path)
    assert main(["predict", path, str(tmp_path / "x.idx"), "--top", "99"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.count(" 0.") == 10 for line in lines)
    assert main(["predict", path, str(tmp_path / "x.idx"), "--limit", "0"]) == 0
    assert capsys.readouterr().out == "... 2 more (raise --limit to see them)\n"


def test_predict_escapes_file_and_class_names(tmp_path, capsys):
    hostile = ["\x1b[2J\x1b[31mred", "new\nline", "\u202eright-to-left", *CLASSES[3:]]
    path = model_file(tmp_path, hostile)
    image = tmp_path / "evil\x1b]0;title\x07.png"
    Image.fromarray(noise((28, 28))).save(image, format="PNG")
    assert main(["predict", path, str(image), "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert out.count("\n") == 1
    assert "evil\\x1b]0;title\\x07.png: " in out
    for escaped in ("\\x1b[2J\\x1b[31mred", "new\\nline", "\\u202eright-to-left"):
        assert escaped in out


def test_predict_errors_are_one_line_and_escaped(tmp_path, capsys):
    path = model_file(tmp_path)
    bomb = tmp_path / "bomb\x1b[2J.png"
    bomb.write_bytes(png_of_zeros(20000, 20000))
    with pytest.raises(SystemExit) as info:
        main(["predict", path, str(bomb)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and "\x1b" not in err
    assert err.startswith("glassnet predict: error: ") and "bomb\\x1b[2J.png" in err
    assert "20000 x 20000" in err and err.count("\n") == 1


def test_predict_refuses_a_model_file_naming_too_few_classes(tmp_path, capsys):
    Image.fromarray(noise((28, 28))).save(tmp_path / "x.png")
    path = model_file(tmp_path, CLASSES[:3])
    with pytest.raises(SystemExit) as info:
        main(["predict", path, str(tmp_path / "x.png")])
    assert info.value.code == 2
    assert "names 3 classes, but its model gives 10 scores" in capsys.readouterr().err
