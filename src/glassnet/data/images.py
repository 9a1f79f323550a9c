"""Image files (PNG, JPEG, BMP) and IDX image files as model input, read defensively.

The format comes from the file's first bytes, never from its name. Pillow opens an image
lazily: its size is checked against ``max_pixels`` before a pixel is decoded, so a small file
that claims a huge canvas is refused instead of filling memory. Any mode and bit depth becomes
grey (C=1) or RGB (C=3) in [0, 1]:

- 16-bit grey (``I;16``) scales 0..65535 to 0..1, with no rounding to 8 bits;
- palette, 1-bit and CMYK images go through Pillow's conversions;
- transparent pixels are background: an image with alpha (RGBA, LA, a palette with a
  transparent entry) is composited on black, or on white with ``invert=True``, so that
  transparent areas read as 0 either way, like MNIST's background.
Shapes: C channels (1 or 3), H, W spatial; results are NCHW.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from glassnet.data.idx import IMAGES_MAGIC, read_idx
from glassnet.data.text import printable

MAX_PIXELS = 1 << 26  # 67 megapixels (8192 x 8192): any photo, not a decompression bomb
ACCEPTED = "PNG, JPEG, BMP or IDX (raw or gzip) image files"
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"\x1f\x8b": "IDX",  # gzip: read_idx checks what is inside
    b"\x00\x00": "IDX",
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# What Pillow raises on a bad header or a broken pixel stream.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)


def image_format(path: str | os.PathLike) -> str | None:
    """The format the file's first bytes show: PNG, JPEG, BMP, IDX, or None for others."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def read_images(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    invert: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from an image file (N = 1) or an IDX image file.

    An image is resized to ``shape`` (see :func:`read_image`); an IDX file's images must have
    ``shape`` already (C = 1). An IDX file of no images gives shape (0, C, H, W).
    """
    kind = image_format(path)
    if kind is None:
        raise ValueError(f"{printable(path)}: not a file of images; expected {ACCEPTED}")
    if kind != "IDX":
        return read_image(path, shape, invert, max_pixels)
    _check_shape(shape)
    pixels = read_idx(path, IMAGES_MAGIC)[:, None]
    if pixels.shape[1:] != tuple(shape):
        raise ValueError(
            f"{printable(path)} holds images of shape {pixels.shape[1:]}, the model expects "
            f"{tuple(shape)}"
        )
    pixels = pixels / np.float32(255)
    return 1 - pixels if invert else pixels


def read_image(
    path: str | os.PathLike,
    shape: tuple[int, int, int] = (1, 28, 28),
    invert: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """One PNG, JPEG or BMP image as (1, C, H, W) float32 in [0, 1].

    Args:
        path: the file; its format comes from its first bytes, whatever its name.
        shape: (C, H, W); C = 1 reads grey ("L"), C = 3 RGB. Other sizes are resized with
            Lanczos filtering.
        invert: 1 - pixel, for dark ink on a light background (then transparent pixels are
            composited on white, so that they end up 0 too).
        max_pixels: refuse images with more pixels than this (checked before decoding).
    Raises:
        ValueError: naming the file: not an image, too many pixels, truncated or corrupt.
    """
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    channels, height, width = _check_shape(shape)
    name = printable(path)
    kind = image_format(path)
    plugins = {
        "PNG": PngImagePlugin.PngImageFile,
        "JPEG": JpegImagePlugin.JpegImageFile,
        "BMP": BmpImagePlugin.BmpImageFile,
    }
    if kind not in plugins:
        raise ValueError(f"{name}: not a PNG, JPEG or BMP image; expected {ACCEPTED}")
    # The plugin class opens the file lazily (header only) and, unlike Image.open, leaves the
    # size check to us: the limit is this call's, not PIL's process-wide MAX_IMAGE_PIXELS.
    try:
        image = plugins[kind](path)
    except DECODE_ERRORS as error:
        raise ValueError(f"{name}: corrupt {kind} image ({printable(str(error))})") from None
    with image:
        _check_size(image.size, max_pixels, name, kind)
        try:
            pixels = _to_array(image, channels, (width, height), invert)
        except DECODE_ERRORS as error:
            reason = printable(str(error))
            raise ValueError(f"{name}: truncated or corrupt {kind} image ({reason})") from None
    pixels = pixels.transpose(2, 0, 1)[None]
    return 1 - pixels if invert else pixels


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise ValueError(f"images need an input shape (1 or 3, H, W), the model's is {shape}")
    return shape


def _check_size(size: tuple[int, int], max_pixels: int, name: str, kind: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ValueError(
            f"{name}: a {kind} image of {width} x {height} = {width * height} pixels, more than "
            f"the {max_pixels} allowed (a decompression bomb?)"
        )


def _to_array(image, channels: int, size: tuple[int, int], invert: bool) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] at ``size`` (W, H) from a Pillow image of any mode."""
    from PIL import Image

    scale = 255.0
    if image.mode in _SIXTEEN_BIT:  # "F" keeps all 16 bits through the resize
        image, scale = image.convert("F"), 65535.0
    else:
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            background = Image.new("RGBA", image.size, "white" if invert else "black")
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    pixels = np.clip(np.asarray(image, dtype=np.float32) / np.float32(scale), 0, 1)
    pixels = pixels.reshape(size[1], size[0], -1)
    return np.repeat(pixels, channels, axis=2) if pixels.shape[2] != channels else pixels
