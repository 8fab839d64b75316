"""A wide-gamut ICC profile for tests, written byte by byte: Adobe RGB (1998) as a v2 matrix/TRC profile.

The machines the tests run on carry no ICC files, and LittleCMS can only make
sRGB itself, so the profile is assembled here from its published facts: the
primaries adapted to D50 and a pure gamma of 563/256 (about 2.2).
"""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
ADOBE_RGB_COLORANTS = {
    b"rXYZ": (0.6097, 0.3111, 0.0195),
    b"gXYZ": (0.2053, 0.6257, 0.0609),
    b"bXYZ": (0.1492, 0.0632, 0.7446),
}
ADOBE_RGB_GAMMA = 563  # u8Fixed8: 2.19921875


def adobe_rgb() -> bytes:
    """The bytes of an ICC profile that LittleCMS reads as Adobe RGB (1998)."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, ADOBE_RGB_GAMMA) + bytes(2)
    tags = {
        b"desc": _description("Adobe RGB (1998) compatible, for tests"),
        b"cprt": b"text" + bytes(4) + b"No copyright, a test profile\x00",
        b"wtpt": _xyz(D50),
        **{signature: _xyz(value) for signature, value in ADOBE_RGB_COLORANTS.items()},
        b"rTRC": curve,
        b"gTRC": curve,
        b"bTRC": curve,
    }
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags.items():
        table.append(struct.pack(">4sII", signature, offset + len(data), len(body)))
        data += body + bytes(-len(body) % 4)
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s12s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ", bytes(12), b"acsp")
    header += bytes(64 - len(header) - 4) + struct.pack(">I", 0)  # platform .. attributes, rendering intent 0
    header += _fixed(D50) + bytes(128 - len(header) - 12)
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


def _fixed(values) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def _xyz(values) -> bytes:
    return b"XYZ " + bytes(4) + _fixed(values)


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\x00"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)
