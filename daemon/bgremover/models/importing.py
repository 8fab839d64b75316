"""`bgremover models import`: the model files rembg users already have, into bgremover's models folder.

A file is recognised by its checksum: the md5 (or sha256) rembg's own code
lists for that model, whatever the file is called. A file under one of rembg's
names whose checksum is not the listed one (a re-export, a damaged download,
a stand-in) is refused as an unknown checksum, unless the user passes
--trust-name: then it is imported on the trust of its name, provided
onnxruntime finds the input and output that model's recipe needs, and its
source says so. Every file is loaded once by onnxruntime before anything is
written, so an entry never promises a shape the file does not have.

The file is copied, never moved, linked or changed: rembg's folder stays as it
was. Each copy is written temp → fsync → rename, then the manifest once, with
the same writer `models fetch` uses, so a killed import leaves at most a
stray file, never an entry without its file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bgremover import durable
from bgremover.models import rembg
from bgremover.models.fetch import write_manifest
from bgremover.models.manifest import ModelError, read_manifest, spec_from_entry

BLOCK = 1 << 20


class Refused(Exception):
    """This one file cannot be imported; one sentence saying why (the file's name goes before it)."""


@dataclass(frozen=True)
class Recognised:
    source: Path
    model: rembg.RembgModel
    entry: dict  # its manifest entry, file and sha256 included
    trusted_name: bool  # imported on its name alone: its checksum is not the one rembg lists


def import_files(
    paths: list[Path],
    folder: Path,
    trust_name: bool = False,
    say: Callable[[str], None] = print,
    refuse: Callable[[str], None] = print,
) -> int:
    """Import each of `paths` into `folder`; each file refused gets one line through `refuse`. Returns how many."""
    manifest = read_manifest(folder, missing_ok=True)
    for other, entry in manifest.items():  # a broken manifest stops us before anything happens
        spec_from_entry(other, entry, folder)
    chosen: dict[str, Recognised] = {}
    refused = 0
    for path in paths:
        try:
            found = recognise(path, trust_name)
            if found.model.name in chosen:
                raise Refused(f"is {found.model.name} again; {chosen[found.model.name].source} is imported as it")
            check_loads(found)
        except Refused as exc:
            refuse(f"{path}: {exc}")
            refused += 1
            continue
        chosen[found.model.name] = found
    added = {}
    for name, found in chosen.items():
        say_licence(found, say)
        if installed_already(manifest.get(name), found.entry["sha256"], folder):
            say(f"{name} is installed already in {folder} (the same file)")
            continue
        copy_checked(found.source, folder / found.entry["file"], found.entry["sha256"])
        added[name] = found.entry
    if added:
        write_manifest(folder, {**manifest, **added})
    for name in added:
        size = (folder / added[name]["file"]).stat().st_size
        say(
            f"installed {name} ({size / 1e6:.1f} MB) in {folder}; "
            f'select it with model = "{name}" in the settings or a job ticket'
        )
    return refused


def rembg_files(home: Path) -> list[Path]:
    """Every file in rembg's models folder, in name order (never its subfolders)."""
    if not home.is_dir():
        raise ModelError(
            f"there is no rembg models folder at {home} (rembg uses $U2NET_HOME, "
            "else $XDG_DATA_HOME/.u2net, else ~/.u2net)"
        )
    return sorted(path for path in home.iterdir() if path.is_file())


# ---------------------------------------------------------------- recognising a file


def recognise(path: Path, trust_name: bool) -> Recognised:
    """The rembg model `path` holds, by its checksum (or, with trust_name, by its name); else Refused."""
    if not path.is_file():
        raise Refused("is not a file")
    if rembg.is_sam_file(path.name):
        raise Refused(rembg.SAM_REFUSAL)
    md5, sha256 = checksums(path)
    model = rembg.by_checksum(md5, sha256)
    named = rembg.by_file_name(path.name)
    if model is None and named is None:
        known = ", ".join(known.name for known in rembg.MODELS.values() if known.refusal is None)
        raise Refused(f"is not one of rembg's model files (md5 {md5}); bgremover imports rembg's {known}")
    if (model or named).refusal:
        raise Refused((model or named).refusal)
    if model is None and not trust_name:
        raise Refused(
            f"unknown checksum: its md5 is {md5}, not the {named.md5} rembg lists for {named.name}; "
            "pass --trust-name to import it on its name"
        )
    trusted_name = model is None
    model = model or named
    entry = {"file": model.file, "sha256": sha256, **model.entry_fields()}
    if trusted_name:
        entry["source"] += "; its checksum is not the one rembg lists: imported on the trust of its name"
    return Recognised(path, model, entry, trusted_name)


def checksums(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def check_loads(found: Recognised) -> None:
    """onnxruntime loads the file where it lies, with the input and output the entry says; else Refused."""
    from bgremover.models import runtime  # onnxruntime: only for an import

    spec = spec_from_entry(found.model.name, {**found.entry, "file": found.source.name}, found.source.parent)
    try:
        runtime.create_session(spec, threads=1)
    except ModelError as exc:
        unknown = "unknown checksum, and it " if found.trusted_name else ""
        raise Refused(f"{unknown}does not fit rembg's recipe for {found.model.name}: {exc}") from None


def say_licence(found: Recognised, say: Callable[[str], None]) -> None:
    model = found.model
    say(f"{model.name}: {model.upstream}; licence: {model.licence}")
    if found.trusted_name:
        say(
            f"{model.name}: {found.source} is not the file rembg lists (unknown checksum); "
            "imported on the trust of its name, as --trust-name asks"
        )


# ---------------------------------------------------------------- writing


def installed_already(entry: object, sha256: str, folder: Path) -> bool:
    if not isinstance(entry, dict) or entry.get("sha256") != sha256:
        return False
    return (folder / str(entry.get("file"))).is_file()


def copy_checked(source: Path, target: Path, sha256: str) -> None:
    """Copy `source` to `target` durably, checking the bytes copied are the bytes recognised."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with source.open("rb") as src, durable.replacing(target, temp=target.with_name(f".{target.name}.partial")) as out:
        for block in iter(lambda: src.read(BLOCK), b""):
            digest.update(block)
            out.write(block)
        if digest.hexdigest() != sha256:  # raising here leaves target as it was
            raise ModelError(f"{source} changed while it was being imported; run the import again")
