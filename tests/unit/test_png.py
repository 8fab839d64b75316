"""The contract of daemon.png.write_png: any reader decodes exactly our pixels, at every level and thread count."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from isal import isal_zlib
from PIL import Image, ImageCms

from bgremover.imaging.png import write_png

SIZES = [(1, 1), (1, 7), (7, 1), (5, 3), (33, 17), (257, 1031)]  # (height, width); odd widths on purpose
CHANNELS = {"L": None, "RGB": 3, "RGBA": 4}
BIG_ENOUGH_TO_SPLIT = (600, 500)  # 600 × (500×4 + 1) bytes filtered: over the 1 MiB threshold for threads


def random_pixels(shape: tuple[int, int], mode: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    channels = CHANNELS[mode]
    return rng.integers(0, 256, size=shape if channels is None else (*shape, channels), dtype=np.uint8)


def photo_like_pixels(shape: tuple[int, int], mode: str) -> np.ndarray:
    """Smooth gradients with a little noise, so that deflate finds matches and emits real Huffman blocks."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 3 + y * 2) % 256 + np.random.default_rng(1).integers(0, 4, size=shape)
    planes = [(base + 40 * k) % 256 for k in range(CHANNELS[mode] or 1)]
    stacked = np.stack(planes, axis=-1).astype(np.uint8)
    return stacked[..., 0] if CHANNELS[mode] is None else stacked


def encode(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    write_png(out, pixels, **options)
    return out.getvalue()


def decode(png: bytes) -> tuple[Image.Image, np.ndarray]:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image, np.asarray(image)


def chunks_of(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """(type, data, stored CRC) for every chunk, parsed by hand so we depend on nothing but the spec."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    found, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        found.append((kind, data, crc))
        position += 12 + length
    assert position == len(png), "the last chunk must end exactly at the end of the file"
    return found


def filtered_up(pixels: np.ndarray) -> bytes:
    """The filtered stream written the slow, obvious way: each row as filter byte 2 and differences from the row above."""
    rows = pixels.reshape(pixels.shape[0], -1).astype(np.int16)
    previous = np.zeros_like(rows[0])
    stream = bytearray()
    for row in rows:
        stream += b"\x02" + ((row - previous) % 256).astype(np.uint8).tobytes()
        previous = row
    return bytes(stream)


@pytest.mark.parametrize("mode", CHANNELS)
@pytest.mark.parametrize("shape", SIZES)
def test_pillow_decodes_the_exact_pixels_for_every_mode_and_size(mode, shape):
    pixels = random_pixels(shape, mode)
    image, decoded = decode(encode(pixels))
    assert image.format == "PNG" and image.mode == mode and image.size == (shape[1], shape[0])
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_every_level_and_thread_count_round_trips(mode, threads, level):
    pixels = photo_like_pixels(BIG_ENOUGH_TO_SPLIT if mode == "RGBA" else (1100, 1000), mode)
    assert len(filtered_up(pixels)) >= 1 << 20, "the image must be big enough for the threads to split it"
    _, decoded = decode(encode(pixels, level=level, threads=threads))
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_joined_idat_is_a_strict_zlib_stream_of_the_up_filtered_rows(threads):
    pixels = photo_like_pixels(BIG_ENOUGH_TO_SPLIT, "RGBA")
    idat = b"".join(data for kind, data, _ in chunks_of(encode(pixels, threads=threads)) if kind == b"IDAT")
    # zlib.decompress checks the header, the final block bit and the Adler-32, and refuses trailing bytes.
    decompressor = zlib.decompressobj()
    assert decompressor.decompress(idat) == filtered_up(pixels)
    assert decompressor.eof and decompressor.unused_data == b""


@pytest.mark.parametrize(("level", "deflater"), [(0, zlib), (1, isal_zlib), (2, isal_zlib), (3, zlib), (9, zlib)])
def test_the_fast_levels_are_deflated_by_isa_l_and_the_others_by_zlib(level, deflater):
    pixels = photo_like_pixels((300, 200), "RGBA")
    idat = b"".join(data for kind, data, _ in chunks_of(encode(pixels, level=level)) if kind == b"IDAT")
    assert idat == deflater.compress(filtered_up(pixels), level)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_change_only_the_speed_not_the_image(threads):
    pixels = photo_like_pixels(BIG_ENOUGH_TO_SPLIT, "RGBA")
    one_thread_png, many_threads_png = encode(pixels, threads=1), encode(pixels, threads=threads)
    assert many_threads_png != one_thread_png, "a big image must really be deflated in pieces"
    np.testing.assert_array_equal(decode(many_threads_png)[1], decode(one_thread_png)[1])


def test_small_images_are_deflated_in_one_piece_whatever_the_thread_count():
    pixels = photo_like_pixels((50, 40), "RGBA")
    assert encode(pixels, threads=4) == encode(pixels, threads=1)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2, 1::3],  # strided slice
        lambda a: a.transpose(1, 0, 2),  # Fortran-like layout
        lambda a: a[:, ::-1],  # negative stride
        lambda a: a[..., :3],  # RGB view of RGBA memory
        lambda a: a[..., 3],  # one channel as a grey image
    ],
)
def test_non_contiguous_arrays_are_encoded_as_they_look(view):
    pixels = view(random_pixels((41, 29), "RGBA"))
    assert not pixels.flags.c_contiguous
    _, decoded = decode(encode(pixels))
    np.testing.assert_array_equal(decoded, pixels)


def test_every_chunk_crc_is_correct_and_chunks_come_in_order():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    noise = random_pixels((700, 500), "RGBA")  # incompressible, so the IDAT data exceeds one 1 MiB chunk
    png = encode(noise, icc_profile=profile, threads=2)
    chunks = chunks_of(png)
    for kind, data, crc in chunks:
        assert crc == zlib.crc32(kind + data), f"bad CRC on {kind!r}"
    kinds = [kind for kind, _, _ in chunks]
    assert kinds[:2] == [b"IHDR", b"iCCP"] and kinds[-1] == b"IEND"
    assert set(kinds[2:-1]) == {b"IDAT"} and len(kinds[2:-1]) > 1, "big images are split into several IDAT chunks"
    assert all(len(data) <= 1 << 20 for kind, data, _ in chunks if kind == b"IDAT")


def test_ihdr_says_8_bit_with_the_colour_type_of_the_array():
    for mode, colour_type in [("L", 0), ("RGB", 2), ("RGBA", 6)]:
        kind, data, _ = chunks_of(encode(random_pixels((3, 5), mode)))[0]
        assert kind == b"IHDR"
        assert struct.unpack(">IIBBBBB", data) == (5, 3, 8, colour_type, 0, 0, 0)


def test_the_icc_profile_survives():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image, _ = decode(encode(random_pixels((4, 4), "RGBA"), icc_profile=profile))
    assert image.info["icc_profile"] == profile


@pytest.mark.parametrize("profile", [None, b""])
def test_no_profile_means_no_iccp_chunk(profile):
    kinds = [kind for kind, _, _ in chunks_of(encode(random_pixels((4, 4), "RGB"), icc_profile=profile))]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_a_path_target_gets_the_same_bytes_as_a_file_object(tmp_path):
    pixels = random_pixels((9, 11), "RGBA")
    write_png(tmp_path / "out.png", pixels)
    write_png(str(tmp_path / "out-str.png"), pixels)
    assert (tmp_path / "out.png").read_bytes() == (tmp_path / "out-str.png").read_bytes() == encode(pixels)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4, 4), dtype=np.uint16),
        np.zeros((4, 4), dtype=np.float32),
        np.zeros((4, 4), dtype=bool),
        np.zeros((4, 4, 2), dtype=np.uint8),
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros((4,), dtype=np.uint8),
        np.zeros((2, 4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 4), dtype=np.uint8),
        np.zeros((4, 0), dtype=np.uint8),
        [[0, 0], [0, 0]],
    ],
    ids=["uint16", "float", "bool", "2-channels", "5-channels", "1-d", "4-d", "no-rows", "no-columns", "list"],
)
def test_arrays_that_are_not_8_bit_images_are_refused(pixels):
    with pytest.raises(ValueError, match="write_png needs"):
        encode(pixels)


@pytest.mark.parametrize("level", [-1, 10, 1.0, None])
def test_levels_outside_0_to_9_are_refused(level):
    with pytest.raises(ValueError, match="zlib level"):
        encode(random_pixels((2, 2), "L"), level=level)


@pytest.mark.parametrize("threads", [0, -2, 1.5])
def test_thread_counts_below_one_are_refused(threads):
    with pytest.raises(ValueError, match="thread count"):
        encode(random_pixels((2, 2), "L"), threads=threads)


def test_nothing_is_written_when_the_input_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "out.png", np.zeros((2, 2), dtype=np.int8))
    assert not (tmp_path / "out.png").exists()
