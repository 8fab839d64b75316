"""Recipes through the real daemon and model: one inference per image whatever the recipes, their files in the
ZIP and the loose tree, their compliance in the JSON, `status` and the page, the mattes kept for `rerender`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

from PIL import Image

from bgremover.recipes import preset_names
from tests.conftest import REPO
from tests.support.harness import Daemon, wait_for
from tests.support.recipes import QUICK, at_the_edge, drop_folder, picture


def recipe_files(status: dict) -> dict[str, str]:
    """Each recipe file the status JSON names, with its recipe."""
    return {r["file"]: r["recipe"] for item in status["items"] for r in item.get("recipes", []) if r["file"]}


def test_five_recipes_come_from_one_inference_into_the_zip_the_loose_tree_and_the_json(tmp_path):
    root = tmp_path / "root"
    five = preset_names()[:5]
    with Daemon(root, fake_jobs=False, recipes=",".join(five), loose_files="true", **QUICK) as daemon:
        drop_folder(root, "shoot", {"red.jpg": picture(1), "more/blue.jpg": picture(2)})
        status = daemon.wait_complete("shoot")
        finished = daemon.events("job_finished")
        members = daemon.zip_members("shoot")
    assert [i["status"] for i in status["items"]] == ["done", "done"]
    # One model run per job, however many recipes: the job counts them, and its stage timings show one inference.
    assert [(e["inferences"], "inference" in e["timings_ms"], "render" in e["timings_ms"]) for e in finished] == [
        (1, True, True)
    ] * 2
    files = recipe_files(status)
    assert sorted(files.values()) == sorted(five * 2)
    # One folder per recipe, the item's own folder kept below it: RECIPE/FOLDER/NAME.
    assert all(name.split("/")[0] == recipe for name, recipe in files.items())
    assert sum(name.startswith(f"{recipe}/more/") for name, recipe in files.items()) == 5
    assert set(members) == {"red.png", "more/blue.png", *files}
    # The loose tree holds exactly what the ZIP holds, byte for byte.
    tree = root / "outbox" / "shoot"
    loose = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    assert loose == members
    for item in status["items"]:
        assert [r["recipe"] for r in item["recipes"]] == five
        assert all(isinstance(r["compliant"], bool) and r["report"] for r in item["recipes"])
    assert status["recipes"] == five
    assert status["non_compliant"] == sum(not r["compliant"] for i in status["items"] for r in i["recipes"])


def test_a_subject_cut_by_the_frame_is_not_compliant_with_fill_85_in_the_json_and_status(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, recipes="amazon", **QUICK) as daemon:
        drop_folder(root, "edge", {"cut.jpg": at_the_edge()})
        status = daemon.wait_complete("edge")
    [recipe] = status["items"][0]["recipes"]
    assert recipe["recipe"] == "amazon"
    assert recipe["compliant"] is False
    assert "edge" in recipe["reason"]
    assert status["non_compliant"] == 1
    shown = status_command(root, "edge")
    assert "1 recipe file not compliant" in shown
    assert f"amazon not compliant: {recipe['reason']}" in shown
    listed = json.loads(status_command(root, "edge", "--json"))
    assert listed["sessions"][0]["non_compliant"] == 1


def status_command(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bgremover", "status", "--root", str(root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_unknown_recipes_in_a_ticket_fail_each_item_with_one_sentence(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, **QUICK) as daemon:
        drop_folder(root, "typo", {"a.jpg": picture(3)}, ticket='recipes = ["amazon", "amazn"]\n')
        status = daemon.wait_complete("typo")
    [item] = status["items"]
    assert item["status"] == "failed"
    assert item["error"].startswith("the recipes amazon,amazn cannot be used: ")
    assert "amazn" in item["error"] and "Traceback" not in item["error"] and "\n" not in item["error"]


def test_loose_files_are_never_seen_half_written(tmp_path):
    root = tmp_path / "root"
    seen: dict[str, bytes] = {}
    stop = threading.Event()

    def watch(tree: Path) -> None:
        # As a sync tool does: every file at its final name, read as soon as it is there (temp names start with ".").
        while not stop.is_set():
            for path in tree.rglob("*") if tree.is_dir() else ():
                if path.is_file() and not path.name.startswith("."):
                    try:
                        seen.setdefault(path.relative_to(tree).as_posix(), path.read_bytes())
                    except FileNotFoundError:
                        pass

    two = ",".join(preset_names()[:2])
    with Daemon(root, fake_jobs=False, recipes=two, loose_files="true", job_slots=2, **QUICK) as daemon:
        reader = threading.Thread(target=watch, args=(root / "outbox" / "many",))
        reader.start()
        try:
            drop_folder(root, "many", {f"p{n}.jpg": picture(n, (160, 120)) for n in range(8)})
            daemon.wait_complete("many", timeout=120)
        finally:
            stop.set()
            reader.join()
        members = daemon.zip_members("many")
    assert len(seen) == len(members) == 8 * 3
    assert seen == members  # every file was whole the first time it was seen
    for data in seen.values():
        Image.open(io.BytesIO(data)).load()


def test_rerender_runs_no_model_and_the_mattes_go_with_the_session(tmp_path):
    root = tmp_path / "root"
    first, second = preset_names()[:2]
    days = 0.00005  # 4.3 s
    settings = {"recipes": first, "keep_sessions_days": days, "keep_outbox_days": days, **QUICK}
    with Daemon(root, fake_jobs=False, **settings) as daemon:
        drop_folder(root, "again", {"a.jpg": picture(4), "b/c.jpg": picture(5)})
        status = daemon.wait_complete("again")
        mattes = sorted((root / "state" / "mattes").iterdir())
        assert len(mattes) == 2
        # onnxruntime cannot even be imported: whatever rerender does, it runs no model.
        rerendered = subprocess.run(
            [sys.executable, "-c", NO_MODEL, "rerender", "again", "--root", str(root), "--recipe", second],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert rerendered.returncode == 0, rerendered.stderr
        assert "rerendered 2 images" in rerendered.stdout
        tree = root / "outbox" / "again"
        again = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
        assert [name.split("/")[0] for name in again] == [second, second]
        assert sum("/b/" in f"/{name}" for name in again) == 1
        # Retention forgets the session: its mattes go with its job files, its loose tree with its ZIP.
        wait_for(lambda: not any((root / "state" / "mattes").iterdir()), timeout=60, what="the mattes pruned")
        wait_for(lambda: not tree.exists(), timeout=60, what="the loose tree pruned")
    assert [i["status"] for i in status["items"]] == ["done", "done"]


NO_MODEL = (
    "import sys; sys.modules['onnxruntime'] = None; from bgremover.main import main; sys.exit(main(sys.argv[1:]))"
)
