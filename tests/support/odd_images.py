"""Odd inputs built byte by byte: a PNG cut mid-stream, and valid variants Pillow cannot decode.

Shared by tests/unit/test_undecodable.py and tests/commands/test_job.py.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from tests.support.images import encoded

TIFF_COMPRESSION = 259  # the Compression tag
TIFF_WEBP = 50001  # the Compression value of WebP-compressed strips


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_cut_data_stream(size: tuple[int, int] = (200, 150)) -> bytes:
    """A PNG whose IDAT holds only the first half of its compressed rows, each chunk well formed.

    The signature, IHDR, a valid IDAT chunk (correct length and CRC) and IEND
    are all there, so Pillow opens it; only decoding finds the rows missing.
    Noise keeps the stream long, so half of it is well short of the picture.
    """
    noise = np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    whole = encoded(Image.fromarray(noise), "PNG")
    start = whole.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", whole[start : start + 4])
    half = whole[start + 8 : start + 8 + length // 2]
    return whole[:start] + png_chunk(b"IDAT", half) + whole[start + 12 + length :]


def tiff_with_webp_compression() -> bytes:
    """A TIFF whose Compression tag says WebP (50001); Pillow's libtiff is built without that codec."""
    data = bytearray(encoded(Image.new("RGB", (8, 8), "red"), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (entries,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        if struct.unpack("<H", data[entry : entry + 2])[0] == TIFF_COMPRESSION:
            data[entry + 8 : entry + 10] = struct.pack("<H", TIFF_WEBP)
    return bytes(data)


def bmp(bits: int, masks: tuple[int, int, int, int] | None = None, colours: int = 0) -> bytes:
    """A 4×4 BMP with `bits` a pixel: BI_BITFIELDS with `masks` (red, green, blue, alpha), else a palette."""
    row = (4 * bits + 31) // 32 * 4
    pixels = bytes(row * 4)
    header = 40 + (16 if masks else 0)
    info = struct.pack("<IiiHHIIiiII", header, 4, 4, 1, bits, 3 if masks else 0, len(pixels), 2835, 2835, colours, 0)
    info += struct.pack("<IIII", *masks) if masks else b""
    palette = bytes(4 * colours)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_with_4444_bitfields() -> bytes:
    """A valid 16-bit BMP with 4-bit red, green, blue and alpha masks, a layout Pillow refuses."""
    return bmp(16, masks=(0x0F00, 0x00F0, 0x000F, 0xF000))


def bmp_with_2_bit_palette() -> bytes:
    """A valid 2-bit palette BMP (as Windows CE wrote them), a depth Pillow refuses."""
    return bmp(2, colours=4)
