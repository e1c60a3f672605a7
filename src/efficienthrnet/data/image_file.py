"""Reading one image file safely: JPEG/PNG only, size from the header before any decoding (bounded by
`DEFAULT_MAX_PIXELS`), truncation and a size that disagrees with the annotation refused
(`decode_image_file`, `ImageFileError`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

# Largest image (width x height) decoded by default: far above any pose dataset, far below the
# gigabytes a crafted header can ask the decoder for.
DEFAULT_MAX_PIXELS = 50_000_000


class ImageFileError(OSError, ValueError):
    """An image file that cannot be used: not JPEG/PNG, truncated, too large, or the wrong size."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that start a frame (SOF0-SOF15 minus DHT C4, JPG C8, DAC CC): they carry the size.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them (TEM, RST0-RST7).
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def _png_header(data: bytes) -> tuple[int, int, bool]:
    """(width, height, complete) of a PNG: size from IHDR; complete when the chunks reach IEND."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("its PNG header (IHDR) is cut short or missing")
    width, height = struct.unpack(">II", data[16:24])
    pos = 8
    while pos + 8 <= len(data):  # walk the chunk lengths only; nothing is decompressed
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return width, height, pos <= len(data)
    return width, height, False


def _jpeg_header(data: bytes) -> tuple[int, int, bool]:
    """(width, height, complete) of a JPEG: size from the SOF segment; complete when an
    end-of-image marker (FFD9) follows it (an EXIF thumbnail's own FFD9 comes before the SOF)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"its JPEG header is corrupt (no segment marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            break
        if marker in _JPEG_SOF_MARKERS and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height, data.rfind(b"\xff\xd9") > pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise ValueError("its JPEG header has no frame (SOF) segment; the file is cut short or corrupt")


def image_header(data: bytes) -> tuple[str, int, int, bool]:
    """(format, width, height, complete) read from a JPEG or PNG file's bytes, without decoding.

    Raises ValueError (without the file name) for other formats and broken headers.
    """
    if data.startswith(_PNG_SIGNATURE):
        return ("PNG", *_png_header(data))
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", *_jpeg_header(data))
    raise ValueError(f"it is not a JPEG or PNG file (it starts with {data[:8]!r}); convert it to JPEG or PNG")


def _check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(
            f"max_pixels={max_pixels!r} must be a positive integer (default {DEFAULT_MAX_PIXELS})"
        )
    return max_pixels


def decode_image_file(
    path: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_size: tuple[int, int] | None = None,
    context: str = "",
) -> np.ndarray:
    """Read a JPEG or PNG file as uint8 RGB [H, W, 3], checking it before decoding.

    The size is read from the file header first, so an image above `max_pixels` (width x
    height) or not of `expected_size` (width, height; either orientation before decoding, as
    EXIF may rotate) is refused without being decoded. A file that ends before its
    end-of-image marker (JPEG FFD9, PNG IEND) is refused too: OpenCV would decode the part
    that is there and fill the rest with grey. Errors name the file, followed by `context`
    (e.g. " (image id 7 in ann.json)").
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    name = f"image file {path}{context}"
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{name} {what}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageFileError(f"{name} cannot be read ({e.strerror}); check its permissions") from e
    if not data:
        raise ImageFileError(f"{name} is empty (0 bytes)")
    try:
        kind, width, height, complete = image_header(data)
    except ValueError as e:
        raise ImageFileError(f"{name} cannot be used: {e}") from e
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageFileError(
            f"{name} is {width}x{height} pixels by its {kind} header, outside 1..max_pixels={max_pixels} "
            f"pixels; shrink the image, or raise max_pixels if it is genuine"
        )
    if expected_size is not None and (width, height) not in (expected_size, expected_size[::-1]):
        raise ImageFileError(
            f"{name} is {width}x{height} by its {kind} header but the annotation says "
            f"{expected_size[0]}x{expected_size[1]}; fix the annotation's width/height or the file"
        )
    if not complete:
        end = "FFD9 end-of-image marker" if kind == "JPEG" else "IEND chunk"
        raise ImageFileError(f"{name} is truncated: the {kind} data stops before its {end}; re-copy the file")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageFileError(f"{name} has a valid {kind} header but OpenCV could not decode its data")
    if expected_size is not None and bgr.shape[:2] != (expected_size[1], expected_size[0]):
        raise ImageFileError(
            f"{name} decodes to {bgr.shape[1]}x{bgr.shape[0]} (after its EXIF rotation) but the annotation "
            f"says {expected_size[0]}x{expected_size[1]}; fix the annotation's width/height or the file"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
