"""What each image gives: the cutout, its mask alone, or both side by side in the ZIP."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bgremover.intake.tickets import TICKET_NAME
from bgremover.outbox import zips as outbox
from tests.support.harness import Daemon
from tests.support.images import encoded, shape_on_texture


def drop_folder(root, folder: str, ticket: str, images: dict[str, bytes]) -> None:
    staging = root.parent / "staging" / folder
    staging.mkdir(parents=True)
    (staging / TICKET_NAME).write_text(ticket)
    for name, data in images.items():
        (staging / name).write_bytes(data)
    staging.rename(root / "inbox" / folder)


def test_both_and_mask_through_the_real_daemon(tmp_path):
    root = tmp_path / "root"
    image = encoded(shape_on_texture((160, 120))[0], "PNG")
    with Daemon(root, fake_jobs=False, session_idle_seconds=1, output_format="webp") as daemon:
        drop_folder(root, "both", 'output = "both"\noutput_format = "png"', {"p.png": image, "p.mask.png": image})
        drop_folder(root, "masks", 'output = "mask"', {"p.png": image})
        drop_folder(
            root, "framed", 'output = "both"\noutput_format = "png"\ncrop = "square"\nsize = 128', {"p.png": image}
        )
        statuses = {name: daemon.wait_complete(name, timeout=120) for name in ("both", "masks", "framed")}
        both, masks, framed = (daemon.zip_members(name) for name in ("both", "masks", "framed"))

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
