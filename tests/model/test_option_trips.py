"""Each per-image option's trip from a folder's job ticket to the job, through one real daemon and the real model.

What each option does to a picture is tested in the test process (tests/unit:
test_backgrounds, test_framing, test_outputs, test_edges, test_decontaminate,
test_tickets); here one daemon takes one ticketed folder per option at once, and
each test reads what its folder's ZIP and status JSON say the job was given.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import edges
from bgremover.intake.tickets import TICKET_NAME
from bgremover.outbox import zips as outbox
from tests.support.harness import Daemon
from tests.support.images import encoded, iou, shape_on_texture
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

SHAPE = encoded(shape_on_texture((160, 120))[0], "PNG")
RED_SIZE = (160, 120)  # the tiny model that finds red takes this size (tests/support/onnxgraphs.py)
EDGE_MODES = ("raw", "clean", "refine")


@dataclass
class Folder:
    ticket: str | None
    files: dict[str, bytes]


def speck_and_pinhole() -> tuple[bytes, np.ndarray]:
    """A disc with a red speck far from it (an island) and a grey pinhole inside it, and the disc's true mask."""
    photo, subject = shape_on_texture(RED_SIZE, shape="disc")
    pixels = np.array(photo)
    pixels[10:16, 10:16] = (220, 30, 30)
    pixels[58:62, 78:82] = (128, 128, 128)
    return encoded(Image.fromarray(pixels), "PNG"), subject


def fur_over_green() -> bytes:
    """The fur ball over a green wall (bench/composites.py), for the bundled model to cut."""
    from bgremover.bench import composites

    alpha, colour = composites.subject("fur ball", (400, 300))
    return encoded(
        Image.fromarray(composites.composite(alpha, colour, composites.background("green wall", (400, 300)))), "PNG"
    )


def two_shapes() -> dict[str, bytes]:
    return {f"p{n}.png": encoded(shape_on_texture((64, 48), seed=n)[0], "PNG") for n in range(2)}


def folders() -> dict[str, Folder]:
    specked, _ = speck_and_pinhole()
    fur = fur_over_green()
    return {
        # background and output_format
        "cutout": Folder(None, {"shape.png": SHAPE}),
        "white": Folder('background = "white"', {"shape.png": SHAPE}),
        "shop": Folder('output_format = "jpeg"\nbackground = "white"\nquality = 90', {"shape.png": SHAPE}),
        # crop, fill and size
        "market": Folder(
            'crop = "square"\nfill = 85\nsize = 256\n', {"disc.png": encoded(shape_on_texture((320, 200))[0], "PNG")}
        ),
        # output
        "both": Folder('output = "both"\noutput_format = "png"', {"p.png": SHAPE, "p.mask.png": SHAPE}),
        "masks": Folder('output = "mask"\noutput_format = "webp"', {"p.png": SHAPE}),
        "framed": Folder('output = "both"\noutput_format = "png"\ncrop = "square"\nsize = 128', {"p.png": SHAPE}),
        # model and edges
        **{
            f"edges-{mode}": Folder(f'model = "redness"\noutput = "mask"\nedges = "{mode}"\n', {"p.png": specked})
            for mode in EDGE_MODES
        },
        # decontaminate
        "plain": Folder("", {"fur.png": fur}),
        "decontaminated": Folder("decontaminate = true\n", {"fur.png": fur}),
        # a ticket's quality and format, beside a folder without one
        "marketplace": Folder('output_format = "webp"\nquality = 50\n', two_shapes()),
        "unticketed": Folder(None, two_shapes()),
    }


@dataclass
class Trip:
    status: dict
    members: dict[str, bytes]

    def image(self, member: str) -> Image.Image:
        return Image.open(io.BytesIO(self.members[member]))

    def array(self, member: str) -> np.ndarray:
        return np.asarray(self.image(member))


@pytest.fixture(scope="module")
def trips(tmp_path_factory) -> tuple[dict[str, Trip], Path, list[dict]]:
    """One daemon, every folder dropped whole at once; it is stopped before any test reads what came back."""
    base = tmp_path_factory.mktemp("trips")
    root = base / "root"
    model = redness_model(root / "models" / "redness.onnx", input_size=RED_SIZE)
    write_manifest(root / "models", {"redness": manifest_entry(model, input_size=list(RED_SIZE))})
    dropped = folders()
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        for name, folder in dropped.items():
            staging = base / "staging" / name
            staging.mkdir(parents=True)
            if folder.ticket is not None:
                (staging / TICKET_NAME).write_text(folder.ticket)
            for file, data in folder.files.items():
                (staging / file).write_bytes(data)
            staging.rename(root / "inbox" / name)
        found = {name: Trip(daemon.wait_complete(name, timeout=300), {}) for name in dropped}
        for name, trip in found.items():
            trip.members = daemon.zip_members(name)
        events = daemon.events("session_opened") + daemon.events("file_ignored")
    return found, root, events


# ---------------------------------------------------------------- background, output_format, quality


def test_white_backgrounds_are_exactly_white_where_the_cutout_is_transparent(trips):
    found, _, _ = trips
    cutout = found["cutout"].array("shape.png")
    white = found["white"].image("shape.png")
    jpeg = found["shop"].image("shape.jpg")

    alpha = cutout[..., 3]
    assert (alpha == 0).any() and (alpha == 255).any()
    pixels = np.asarray(white)
    assert white.mode == "RGB"
    assert (pixels[alpha == 0] == 255).all()  # pure white, RGB 255,255,255
    np.testing.assert_array_equal(pixels[alpha == 255], cutout[..., :3][alpha == 255])  # the subject untouched
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (160, 120))
    assert np.asarray(jpeg)[alpha == 0].mean() > 250  # white, give or take JPEG's rounding


def test_a_ticket_applies_to_its_folder_only(trips):
    found, root, events = trips
    ticketed, plain = found["marketplace"].status, found["unticketed"].status
    webp, png = found["marketplace"].members, found["unticketed"].members
    assert (ticketed["format"], ticketed["ticket"], ticketed["error"]) == (
        "webp",
        {"output_format": "webp", "quality": 50},
        None,
    )
    assert (plain["format"], plain["ticket"]) == ("png", None)
    assert sorted(webp) == ["p0.webp", "p1.webp"] and sorted(png) == ["p0.png", "p1.png"]
    for data, fmt in [*((d, "WEBP") for d in webp.values()), *((d, "PNG") for d in png.values())]:
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode) == (fmt, "RGBA")
    assert [e["ticket"] for e in events if e["event"] == "session_opened" and e["session"] == "marketplace"] == [
        {"output_format": "webp", "quality": 50}
    ]
    assert (root / "inbox" / "marketplace" / TICKET_NAME).exists()  # never taken: it stays with its folder
    assert not [e for e in events if e["event"] == "file_ignored"]


# ---------------------------------------------------------------- crop, fill, size


def test_a_marketplace_folder_gets_square_white_jpegs_of_the_asked_size(trips):
    from tests.support.framing import opaque_box

    found, _, _ = trips
    status, member = found["market"].status, found["market"].image("disc.png")
    assert status["ticket"] == {"crop": "square", "fill": 85.0, "size": 256}
    assert (member.mode, member.size) == ("RGBA", (256, 256))
    left, top, right, bottom = opaque_box(member)
    assert abs(max(right - left, bottom - top) - 0.85 * 256) <= 2


# ---------------------------------------------------------------- output


def test_both_and_mask_through_the_real_daemon(trips):
    found, _, _ = trips
    statuses = {name: found[name].status for name in ("both", "masks", "framed")}
    both, masks, framed = (found[name].members for name in ("both", "masks", "framed"))

    # Two dropped names whose outputs would meet ("p.mask.png" is also p.png's mask name):
    # every cutout keeps its own mask beside it, and nothing is overwritten.
    outputs = {item["name"]: item["output"] for item in statuses["both"]["items"]}
    assert outputs == {"p.mask.png": "p.mask.png", "p.png": "p-png.png"}
    # The status JSON names each item's mask member, so nobody has to derive it.
    masks_named = {item["name"]: item["mask"] for item in statuses["both"]["items"]}
    assert masks_named == {"p.mask.png": "p.mask.mask.png", "p.png": "p-png.mask.png"}
    assert sorted(both) == sorted([*outputs.values(), *masks_named.values()])
    assert [item["mask"] for item in statuses["masks"]["items"]] == [None]
    for member in outputs.values():
        cutout, mask = Image.open(io.BytesIO(both[member])), Image.open(io.BytesIO(both[outbox.mask_member(member)]))
        assert (cutout.mode, mask.mode) == ("RGBA", "L")
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(cutout.getchannel("A")))

    assert statuses["masks"]["format"] == "png"  # a mask is a PNG whatever output_format says
    [only] = masks.values()
    grey = Image.open(io.BytesIO(only))
    assert (list(masks), grey.format, grey.mode, grey.size) == (["p.png"], "PNG", "L", (160, 120))
    assert (np.asarray(grey) == 0).any() and (np.asarray(grey) == 255).any()

    framed_cutout, framed_mask = (Image.open(io.BytesIO(framed[name])) for name in ("p.png", "p.mask.png"))
    assert framed_cutout.size == framed_mask.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(framed_mask), np.asarray(framed_cutout.getchannel("A")))


# ---------------------------------------------------------------- model and edges


def test_the_daemon_applies_the_model_and_edges_of_each_folders_ticket(trips):
    """A tiny model that finds red (tests/support/onnxgraphs.py) sees the planted speck and pinhole as the model would."""
    found, _, _ = trips
    photo, subject = speck_and_pinhole()
    masks = {mode: found[f"edges-{mode}"].array("p.png") for mode in EDGE_MODES}

    raw, cleaned, refined = masks["raw"], masks["clean"], masks["refine"]
    assert raw[10:16, 10:16].min() >= 128 and raw[59:61, 79:81].max() < 128, "the model saw the speck and the hole"
    assert cleaned[10:16, 10:16].max() == 0, "clean removed the island"
    assert cleaned[59:61, 79:81].min() == 255, "clean filled the pinhole"
    assert iou(cleaned >= 128, subject) >= 0.97
    outside = ~edges.band(raw, edges.band_width(raw.shape))
    np.testing.assert_array_equal(refined[outside], raw[outside])
    # refine of the model's own mask, steered by the photo: on a mask this sure it may change only a few pixels
    # of the band, so the whole result is compared rather than asking for some difference.
    pixels = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    np.testing.assert_array_equal(refined, edges.refine(raw, pixels))


def test_a_folder_whose_ticket_asks_for_decontamination_gets_it_and_one_without_does_not(trips):
    """The fur ball over a green wall, cut by the bundled model in two folders."""
    found, _, _ = trips
    plain, cleaned = found["plain"].array("fur.png"), found["decontaminated"].array("fur.png")
    np.testing.assert_array_equal(plain[..., 3], cleaned[..., 3])
    partial = (plain[..., 3] > 0) & (plain[..., 3] < 255)
    changed = (plain[..., :3] != cleaned[..., :3]).any(axis=2)
    assert changed.any() and not (changed & ~partial).any(), "only partial pixels change colour"
    green = [
        (cutout[..., 1].astype(int) - cutout[..., 0] / 2 - cutout[..., 2] / 2)[partial].mean()
        for cutout in (plain, cleaned)
    ]
    assert green[1] < green[0] - 5, green
