"""Job tickets: a bgremover.toml in a dropped folder sets that folder's output, or refuses the folder with a reason."""

from __future__ import annotations

from pathlib import Path

from bgremover.intake.tickets import TICKET_NAME
from tests.support.harness import Daemon, wait_for
from tests.support.images import encoded, shape_on_texture

# -- through the real daemon and model ------------------------------------------------


def image_bytes(seed: int) -> bytes:
    return encoded(shape_on_texture((64, 48), seed=seed)[0], "PNG")


def drop_folder(root: Path, folder: str, ticket: str | None, count: int = 2) -> None:
    """A whole folder, ticket included, renamed into the inbox at once, as a careful copy tool does."""
    staging = root.parent / "staging" / folder
    staging.mkdir(parents=True)
    if ticket is not None:
        (staging / TICKET_NAME).write_text(ticket)
    for n in range(count):
        (staging / f"p{n}.png").write_bytes(image_bytes(n))
    staging.rename(root / "inbox" / folder)


def test_an_invalid_ticket_fails_its_folder_and_a_fixed_one_runs_on_retry(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        drop_folder(root, "shop", 'output_format = "webp"\nquality = 500\n')
        status = daemon.wait_complete("shop")
        error = (
            "the job ticket bgremover.toml is invalid: bad setting 'quality': "
            "Input should be less than or equal to 100 (got 500)"
        )
        assert status["error"] == error
        assert [(i["status"], i["error"]) for i in status["items"]] == [("failed", error)] * 2
        assert not (root / "outbox" / "shop.zip").exists() or daemon.zip_members("shop") == {}
        assert daemon.events("ticket_refused")[0]["error"] == error

        (root / "inbox" / "shop" / TICKET_NAME).write_text('output_format = "webp"\nquality = 50\n')
        for item in status["items"]:
            (root / item["retry_marker"]).touch()
        wait_for(lambda: daemon.status("shop")["counts"]["done"] == 2, timeout=60, what="the retried items")
        status = daemon.wait_complete("shop")
        members = daemon.zip_members("shop")
    assert (status["error"], status["format"]) == (None, "webp")
    assert sorted(members) == ["p0.webp", "p1.webp"]
