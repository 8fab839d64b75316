"""Framing a cutout for a catalog: cropped to its subject, or centred on a square canvas the subject fills."""

from __future__ import annotations

import io

from PIL import Image

from bgremover.intake.tickets import TICKET_NAME
from tests.support.framing import opaque_box
from tests.support.harness import Daemon
from tests.support.images import encoded, shape_on_texture


def test_a_marketplace_folder_gets_square_white_jpegs_of_the_asked_size(tmp_path):
    root = tmp_path / "root"
    image, _ = shape_on_texture((320, 200))
    staging = tmp_path / "staging" / "market"
    staging.mkdir(parents=True)
    (staging / TICKET_NAME).write_text('crop = "square"\nfill = 85\nsize = 256\n')
    (staging / "disc.png").write_bytes(encoded(image, "PNG"))
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        staging.rename(root / "inbox" / "market")
        status = daemon.wait_complete("market", timeout=120)
        member = Image.open(io.BytesIO(daemon.zip_members("market")["disc.png"]))
    assert status["ticket"] == {"crop": "square", "fill": 85.0, "size": 256}
    assert (member.mode, member.size) == ("RGBA", (256, 256))
    left, top, right, bottom = opaque_box(member)
    assert abs(max(right - left, bottom - top) - 0.85 * 256) <= 2
