"""Recipes' wiring in one process: each recipe's file named and placed as the ZIP names it, a recipe that fails
costing no other, and the compliance counted alike by the status JSON and by SQLite for `status` and the page."""

from __future__ import annotations

import json
from contextlib import closing

import numpy as np
from PIL import Image

from bgremover import recipes
from bgremover.job import renders
from bgremover.outbox.status import session_document
from bgremover.queue.states import Status
from bgremover.queue.store import Store
from bgremover.settings import load_settings


def cutout() -> Image.Image:
    pixels = np.zeros((60, 80, 4), np.uint8)
    pixels[..., :3] = 200
    pixels[15:45, 20:60, 3] = 255
    return Image.fromarray(pixels, "RGBA")


def test_each_recipe_file_goes_to_its_recipes_folder_under_the_items_own_folder():
    two = recipes.preset_names()[:2]
    written = {}
    entries = renders.render_each(
        cutout(),
        None,
        renders.load(",".join(two), None),
        renders.Naming("shoes/red.png", "catalog", 3),
        lambda number, member, data: written.setdefault(member, (number, data)),
    )
    assert [e["recipe"] for e in entries] == two
    assert [e["file"].split("/")[:2] for e in entries] == [[name, "shoes"] for name in two]
    assert {e["file"]: n for n, e in enumerate(entries)} == {member: n for member, (n, _) in written.items()}
    assert all(e["error"] is None and "compliant" in e["report"] for e in entries)


def test_a_recipe_that_fails_to_render_costs_neither_the_others_nor_the_image(monkeypatch):
    three = recipes.preset_names()[:3]
    real = recipes.render_many

    def render_many(*args, **kwargs):
        rendered = real(*args, **kwargs)
        rendered[1] = MemoryError("made to fail")  # as render_many hands back a recipe's failure, in its place
        return rendered

    monkeypatch.setattr(recipes, "render_many", render_many)
    written = []
    entries = renders.render_each(
        cutout(), None, renders.load(",".join(three), None), renders.Naming("a.png"), lambda n, m, d: written.append(n)
    )
    assert [(e["recipe"], e["file"] is None) for e in entries] == [
        (three[0], False),
        (three[1], True),
        (three[2], False),
    ]
    assert entries[1]["error"] == f"the recipe {three[1]} could not be rendered: MemoryError: made to fail"
    assert written == [0, 2]


def test_unknown_recipe_names_are_one_sentence():
    try:
        renders.load("amazon,amazn", None)
    except renders.Unusable as exc:
        said = str(exc)
    assert said.startswith("the recipes amazon,amazn cannot be used: ") and "\n" not in said


def test_the_json_and_sqlite_count_the_same_files_not_compliant(tmp_path):
    settings = load_settings(root=tmp_path / "root", recipes="amazon,ebay")
    settings.state_dir.mkdir(parents=True)
    entries = [
        {
            "recipe": "amazon",
            "file": "amazon/a_amazon.jpg",
            "error": None,
            "report": {"compliant": False, "reason": "cut"},
        },
        {"recipe": "ebay", "file": None, "error": "the recipe ebay could not be rendered: x", "report": None},
    ]
    good = [{"recipe": "amazon", "file": "amazon/b_amazon.jpg", "error": None, "report": {"compliant": True}}]
    with closing(Store(settings.database)) as store:
        store.create_session("s", "s", "png", 1000.0)
        for name, renders_of in (("a.jpg", entries), ("b.jpg", good)):
            item = store.add_item("s", name, name.replace(".jpg", ".png"), "jpg", name.encode(), 1000.0)
            store.transition(item.id, Status.QUEUED, Status.PROCESSING, 1001.0)  # QUEUED -> PROCESSING
            # PROCESSING -> DONE
            store.transition(item.id, Status.PROCESSING, Status.DONE, 1002.0, renders=json.dumps(renders_of))
        document = session_document(store.session("s"), store.items("s"), settings)
        counted = store.non_compliant_of(["s"])
    assert document["recipes"] == ["amazon", "ebay"]
    assert document["non_compliant"] == counted["s"] == 2
    a = document["items"][0]["recipes"]
    assert [(r["compliant"], r["reason"]) for r in a] == [
        (False, "cut"),
        (False, "the recipe ebay could not be rendered: x"),
    ]
