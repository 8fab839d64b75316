"""Recipes on the command line: `remove --recipe` writes each recipe's file beside OUTPUT from one cutout, and a
recipe name nobody has stops `remove` and `run` with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

from bgremover.recipes import preset_names
from tests.conftest import REPO
from tests.support.images import encoded, shape_on_texture


def bgremover(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bgremover", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_remove_with_recipes_writes_each_recipes_file_beside_the_output(tmp_path):
    source = tmp_path / "shoe.jpg"
    source.write_bytes(encoded(shape_on_texture((96, 72), seed=1)[0], "JPEG"))
    two = preset_names()[:2]
    (tmp_path / "out").mkdir()
    done = bgremover("remove", str(source), str(tmp_path / "out" / "shoe.png"), "--recipe", ",".join(two))
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    said = [line.removeprefix(f"wrote {tmp_path / 'out'}/") for line in done.stdout.splitlines()]
    assert sorted(said) == written and "shoe.png" in written and len(written) == 3


def test_an_unknown_recipe_stops_remove_and_run_with_one_line(tmp_path):
    source = tmp_path / "a.jpg"
    source.write_bytes(encoded(shape_on_texture((64, 48))[0], "JPEG"))
    removed = bgremover("remove", str(source), str(tmp_path / "a.png"), "--recipe", "amazn")
    assert removed.returncode == 2
    assert removed.stderr.startswith("bgremover: the recipes amazn cannot be used: ")
    assert len(removed.stderr.splitlines()) == 1 and not (tmp_path / "a.png").exists()
    ran = bgremover("run", "--root", str(tmp_path / "root"), BGREMOVER_RECIPES="amazon,amazn")
    assert ran.returncode == 2
    assert "cannot start: the recipes amazon,amazn cannot be used: " in ran.stderr


def test_remove_of_a_folder_writes_each_recipe_under_its_folder_as_the_zip_does(tmp_path):
    photos = tmp_path / "photos"
    (photos / "shoes").mkdir(parents=True)
    for n, name in enumerate(["a.jpg", "shoes/b.jpg"]):
        (photos / name).write_bytes(encoded(shape_on_texture((96, 72), seed=n)[0], "JPEG"))
    done = bgremover("remove", str(photos), "-o", str(tmp_path / "out"), "--recipe", "ebay,thumbnail")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    folders = sorted(name.rpartition("/")[0] for name in written)
    assert folders == ["", "ebay", "ebay/shoes", "shoes", "thumbnail", "thumbnail/shoes"]
    assert "a.png" in written and "shoes/b.png" in written
