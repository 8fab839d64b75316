"""A fast PNG encoder for cutouts: numpy "Up" filtering and deflate, optionally on several threads.

Pillow's PNG encoder is the slowest stage of the pipeline: it picks a filter per row in C and then
deflates on one core. Here the filtering is one vectorised subtraction and the deflate can be
split across threads, because both deflaters used (CPython's zlib, and ISA-L's for the fast
levels) release the GIL while they compress.

Pure computation plus one sequence of writes to the target; no temp files or renames (the caller
owns those).
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import BinaryIO

import numpy as np
from isal import isal_zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE_BY_CHANNELS = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA
FILTER_UP = 2
ICC_PROFILE_NAME = b"icc"
IDAT_CHUNK_BYTES = 1 << 20  # any size is legal; 1 MiB keeps single chunks out of readers' worst cases
PARALLEL_MIN_BYTES = 1 << 20  # below this, thread start-up costs more than it saves
PNG_MAX_DIMENSION = 2**31 - 1
# ISA-L's deflate at its levels 1 and 2 is 3-4× as fast as zlib's at the same levels, and its
# output no larger (a 2000×1500 cutout at level 1: 19 ms and 2.38 MB against zlib's 71 ms and
# 2.49 MB). zlib's level 0 stores, and ISA-L has no counterpart for its slower levels 3 to 9
# (its level 3 made that cutout larger than its level 2), so those stay zlib's.
ISAL_LEVELS = (1, 2)


def write_png(
    target: BinaryIO | str | os.PathLike,
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    level: int = 1,
    threads: int = 1,
) -> None:
    """Write `pixels` (H×W grey, H×W×3 RGB or H×W×4 RGBA, uint8) as an 8-bit PNG to a path or binary file."""
    colour_type = _colour_type_of(pixels)
    _check_options(level, threads)
    height, width = pixels.shape[:2]
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if icc_profile:
        chunks.append((b"iCCP", ICC_PROFILE_NAME + b"\0\0" + zlib.compress(icc_profile)))
    compressed = _zlib_stream(_filter_up(pixels), level, threads)
    chunks.extend((b"IDAT", piece) for piece in _split(compressed, IDAT_CHUNK_BYTES))
    chunks.append((b"IEND", b""))
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as out:
            _write_chunks(out, chunks)
    else:
        _write_chunks(target, chunks)


def _colour_type_of(pixels: np.ndarray) -> int:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise ValueError(f"write_png needs a uint8 numpy array, not {getattr(pixels, 'dtype', type(pixels))}.")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2] if pixels.ndim == 3 else None
    if channels not in COLOUR_TYPE_BY_CHANNELS:
        raise ValueError(f"write_png needs an H×W, H×W×3 or H×W×4 array, not shape {pixels.shape}.")
    height, width = pixels.shape[:2]
    if not (0 < height <= PNG_MAX_DIMENSION and 0 < width <= PNG_MAX_DIMENSION):
        raise ValueError(f"write_png needs at least one pixel in each direction, not {width}×{height}.")
    return COLOUR_TYPE_BY_CHANNELS[channels]


def _check_options(level: int, threads: int) -> None:
    if not isinstance(level, int) or not 0 <= level <= 9:
        raise ValueError(f"The zlib level must be an integer from 0 to 9, not {level!r}.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"The thread count must be a positive integer, not {threads!r}.")


def _filter_up(pixels: np.ndarray) -> memoryview:
    """Every scanline with filter type 2 ("Up"): a leading byte 2, then each byte minus the one above.

    Why Up for every row: it is one vectorised subtraction over the whole image (under 1 ms for
    2000×1500 RGBA), and on our test photos it compressed as well as or better than Paeth and a
    per-row adaptive choice, and far better than Sub, at every zlib level we tried (1, 3, 6).
    Deflate, not filtering, is where the time goes.
    The first row is filtered against an imaginary row of zeros, so it is stored unchanged.
    """
    rows = pixels.reshape(pixels.shape[0], -1)  # copies only when the layout demands it
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = FILTER_UP
    filtered[0, 1:] = rows[0]
    # uint8 arithmetic wraps modulo 256, which is exactly the PNG filter arithmetic.
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    return memoryview(filtered).cast("B")


def _deflater(level: int) -> ModuleType:
    """The zlib-compatible module that deflates at `level`: ISA-L's for the fast levels, else zlib."""
    return isal_zlib if level in ISAL_LEVELS else zlib


def _zlib_stream(data: memoryview, level: int, threads: int) -> bytes:
    if threads == 1 or len(data) < PARALLEL_MIN_BYTES:
        return _deflater(level).compress(data, level)
    return _parallel_zlib_stream(data, level, threads)


def _parallel_zlib_stream(data: memoryview, level: int, threads: int) -> bytes:
    """A zlib stream whose deflate body was compressed in `threads` independent pieces.

    Why the concatenation is valid: a zlib stream is a 2-byte header, a sequence of deflate
    blocks, and the Adler-32 of the uncompressed data. Z_SYNC_FLUSH ends a piece's blocks
    without setting the "final block" bit and pads to a byte boundary (with an empty stored
    block), so the next piece's blocks may start right after it. Each piece is compressed from a
    fresh state, so no back-reference points before its own start; a decoder keeps a window
    across blocks but nothing requires a match to use it. Only the last piece ends with
    Z_FINISH, which sets the final bit. The cost is a few hundred bytes of lost matches at each seam.
    """
    pieces = _split(data, -(-len(data) // threads))
    with ThreadPoolExecutor(max_workers=len(pieces), thread_name_prefix="png-deflate") as pool:
        futures = [
            pool.submit(_raw_deflate, piece, level, is_last=index == len(pieces) - 1)
            for index, piece in enumerate(pieces)
        ]
        checksum = zlib.adler32(data)  # overlaps with the workers; adler32 is far cheaper than deflate
        body = [future.result() for future in futures]
    return _zlib_header(level) + b"".join(body) + struct.pack(">I", checksum)


def _raw_deflate(piece: memoryview, level: int, *, is_last: bool) -> bytes:
    deflater = _deflater(level)
    compressor = deflater.compressobj(level, deflater.DEFLATED, -deflater.MAX_WBITS)  # negative wbits: raw deflate
    return compressor.compress(piece) + compressor.flush(deflater.Z_FINISH if is_last else deflater.Z_SYNC_FLUSH)


def _zlib_header(level: int) -> bytes:
    # Let zlib pick the two header bytes (window size, level hint, check bits) it would write itself.
    return zlib.compress(b"", level)[:2]


def _split(data: bytes | memoryview, size: int) -> list:
    return [data[start : start + size] for start in range(0, len(data), size)] or [data]


def _write_chunks(out: BinaryIO, chunks: list[tuple[bytes, bytes]]) -> None:
    out.write(PNG_SIGNATURE)
    for kind, data in chunks:
        out.write(struct.pack(">I", len(data)) + kind)
        out.write(data)
        # The CRC covers the chunk type and data, not the length.
        out.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))
