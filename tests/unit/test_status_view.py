"""`bgremover status`, the live view: bars, counts, rate, ETA and failures, once, as JSON, or followed.

The arithmetic is pinned with fixed clocks; the command runs as a real process
beside a real daemon (fake jobs: `sleep 1` takes a second, `bad-input` fails),
after that daemon stopped, and on a root with no database at all.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import Item, Session, Store
from bgremover.service.rootlock import lock_root
from bgremover.settings import load_settings
from bgremover.status import progress
from bgremover.status import view as statusview
from tests.support.status_view import BAD_INPUT_ERROR

# ---------------------------------------------------------------- the arithmetic, with fixed times


def test_the_rate_is_unknown_until_two_items_finished():
    assert progress.rate_per_second([], now=100.0) is None
    assert progress.rate_per_second([90.0], now=100.0) is None


def test_the_rate_counts_from_the_first_recent_finish_to_now():
    finishes = [100.0, 102.0, 104.0, 106.0]  # one every 2 s
    assert progress.rate_per_second(finishes, now=106.0) == pytest.approx(0.5)
    # Nothing finished for 6 s more: the rate falls instead of holding its last good value.
    assert progress.rate_per_second(finishes, now=112.0) == pytest.approx(3 / 12)


def test_the_rate_forgets_finishes_older_than_its_window():
    old = [0.0, 1.0, 2.0, 3.0]  # a burst long ago
    recent = [1000.0, 1010.0]
    assert progress.rate_per_second(old + recent, now=1010.0, window=300) == pytest.approx(1 / 10)
    assert progress.rate_per_second(old, now=1010.0, window=300) is None


def test_the_eta_is_what_remains_at_the_rate_zero_when_nothing_remains_and_unknown_without_a_rate():
    assert progress.eta_seconds(10, 0.5) == 20
    assert progress.eta_seconds(0, None) == 0
    assert progress.eta_seconds(3, None) is None
    assert progress.eta_seconds(3, 0.0) is None


def test_an_eta_counts_the_items_queued_ahead_lowest_id_first():
    pending = [3, 5, 9, 12]
    assert progress.pending_up_to(pending, 9) == 3  # 3 and 5 go first, whichever session they are in
    assert progress.pending_up_to(pending, 3) == 1


@pytest.mark.parametrize(
    ("finished", "total", "drawn"),
    [
        (0, 100, "[....................]"),
        (37, 100, "[#######.............]"),
        (99, 100, "[###################.]"),  # full only once everything is finished
        (100, 100, "[####################]"),
        (0, 0, "[....................]"),
    ],
)
def test_the_bar_fills_with_finished_items(finished, total, drawn):
    assert progress.bar(finished, total) == drawn


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0s"),
        (0.2, "1s"),
        (59, "59s"),
        (61, "1m01s"),
        (3599.5, "1h00m"),
        (3725, "1h02m"),
    ],
)
def test_durations_read_in_seconds_minutes_or_hours_rounded_up(seconds, text):
    assert progress.duration_text(seconds) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (None, "—"),
        (25.4, "25/s"),
        (1.25, "1.2/s"),
        (0.93, "0.93/s"),
        (0.05, "3/min"),
        (0.2 / 60, "0.2/min"),
    ],
)
def test_rates_read_per_second_or_per_minute(rate, text):
    assert progress.rate_text(rate) == text


# ---------------------------------------------------------------- the text, from a fixed view


def session(name: str, state: SessionState = SessionState.PROCESSING, zip_name: str | None = None) -> Session:
    return Session(
        name=name,
        source=name,
        state=state,
        format="png",
        created_at=0.0,
        updated_at=0.0,
        last_item_at=0.0,
        zip=zip_name,
    )


def item(item_id: int, session_name: str, name: str, status: Status, at: float = 0.0, error: str | None = None) -> Item:
    return Item(
        id=item_id,
        session=session_name,
        name=name,
        member=name.replace(".jpg", ".png"),
        ext="jpg",
        source=name.encode(),
        status=status,
        error=error,
        note=None,
        attempts=1,
        job_pid=None,
        created_at=0.0,
        updated_at=at,
    )


def test_the_text_view_shows_the_daemon_then_each_session_with_its_failures(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    catalog = [
        item(1, "catalog", "a.jpg", Status.DONE, at=100.0),
        item(2, "catalog", "broken.jpg", Status.FAILED, at=102.0, error=BAD_INPUT_ERROR),
        item(3, "catalog", "c.jpg", Status.DONE, at=104.0),
        item(4, "catalog", "d.jpg", Status.PROCESSING, at=104.0),
        item(5, "catalog", "e.jpg", Status.QUEUED),
    ]
    shoes = [item(6, "shoes", "red.jpg", Status.QUEUED)]
    old = [item(7, "old", "x.jpg", Status.DONE, at=1.0)]
    pending = [4, 5, 6]
    rate = progress.rate_per_second([100.0, 102.0, 104.0], now=104.0)  # 2 more finished in 4 s
    views = [
        statusview.session_view(session("old", SessionState.COMPLETE, "old.zip"), old, 104.0, pending, rate),
        statusview.session_view(session("catalog"), catalog, 104.0, pending, rate),
        statusview.session_view(session("shoes", SessionState.OPEN), shoes, 104.0, pending, rate),
    ]
    view = statusview.View(settings.root, 104.0, 4242, True, 2, 1, rate, progress.eta_seconds(3, rate), views)

    assert statusview.render_text(view, settings) == [
        "daemon: running (pid 4242); 2 queued, 1 processing; rate 0.5/s, ETA 6s",
        "old      complete    [####################]  1/1  1 done  old.zip",
        "catalog  processing  [############........]  3/5  2 done, 1 failed, 1 processing, 1 queued"
        "  rate 0.5/s  ETA 4s  no ZIP yet",
        f"  failed     broken.jpg: {BAD_INPUT_ERROR} (retry: touch {settings.retry_dir / 'catalog' / 'broken.jpg'})",
        # Nothing of its own finished yet, so no rate; but it knows its place in the queue.
        "shoes    open        [....................]  0/1  0 done, 1 queued  rate —  ETA 6s  no ZIP yet",
    ]


def test_a_stopped_daemon_gives_no_eta_however_fast_it_was(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    items = [
        item(1, "s", "a.jpg", Status.DONE, at=10.0),
        item(2, "s", "b.jpg", Status.DONE, at=11.0),
        item(3, "s", "c.jpg", Status.QUEUED),
    ]
    stopped = statusview.session_view(session("s"), items, 12.0, [3], daemon_rate=None)
    assert stopped.rate_per_s == pytest.approx(0.5) and stopped.eta_s is None
    view = statusview.View(settings.root, 12.0, None, True, 1, 0, 0.5, None, [stopped])
    assert statusview.render_text(view, settings)[0] == "daemon: not running; 1 queued, 0 processing; rate 0.5/s, ETA —"


def test_a_frame_taller_than_the_terminal_is_cut_and_every_line_clears_its_old_tail():
    text = "".join(f"line {n}\n" for n in range(30))
    drawn = statusview.fitted(text, rows=10, columns=80).split("\n")[:-1]
    assert len(drawn) == 9, "one row stays free so the screen never scrolls"
    assert drawn[0] == "line 0" + statusview.CLEAR_LINE
    assert drawn[-1].startswith("… 22 more lines")


def test_a_line_wider_than_the_terminal_counts_as_the_rows_it_wraps_onto():
    text = "x" * 250 + "\n" + "".join(f"line {n}\n" for n in range(10))  # 250 columns: 4 rows of 80
    drawn = statusview.fitted(text, rows=10, columns=80).split("\n")[:-1]
    assert drawn[:-1] == ["x" * 250 + statusview.CLEAR_LINE] + [f"line {n}{statusview.CLEAR_LINE}" for n in range(4)]
    assert drawn[-1].startswith("… 6 more lines")
    assert statusview.fitted("short\n", rows=10, columns=80) == "short" + statusview.CLEAR_LINE + "\n"


def frames_until_interrupted(count: int, redraw: bool) -> str:
    out, frames = io.StringIO(), iter(f"frame {n}\n" for n in range(count))
    ticks = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == count:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        statusview.follow(lambda: next(frames), out, 0.5, redraw=redraw, sleep=sleep)
    assert ticks == [0.5] * count
    return out.getvalue()


def test_following_into_a_pipe_prints_frame_after_frame():
    assert frames_until_interrupted(3, redraw=False) == "frame 0\n\nframe 1\n\nframe 2\n"


def test_following_on_a_terminal_draws_each_frame_over_the_last():
    drawn = frames_until_interrupted(2, redraw=True)
    home, line, below = statusview.HOME, statusview.CLEAR_LINE, statusview.CLEAR_BELOW
    assert drawn == (statusview.CLEAR_SCREEN + home + f"frame 0{line}\n" + below + home + f"frame 1{line}\n" + below)


def test_the_daemon_is_seen_by_its_lock_without_taking_it(tmp_path):
    state = tmp_path / "state"
    assert statusview.daemon_pid(state / "daemon.lock") == (None, True)
    fd = lock_root(tmp_path, state)
    try:
        assert statusview.daemon_pid(state / "daemon.lock") == (os.getpid(), True)
    finally:
        os.close(fd)
    assert statusview.daemon_pid(state / "daemon.lock") == (None, True), "a released lock is no daemon"


# ---------------------------------------------------------------- the command, as a real process


def test_a_name_with_control_characters_is_escaped_in_text_and_exact_in_json(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    settings.state_dir.mkdir(parents=True)
    store = Store(settings.database)
    store.create_session("shoot", "shoot", "png", 1.0)
    hostile = "\x1b[31mred\x1b]0;owned\x07\x9b2J\x7f.jpg"
    added = store.add_item("shoot", hostile, "red.png", ".jpg", b"inbox/shoot/red.jpg", 1.0)
    store.transition(added.id, Status.QUEUED, Status.PROCESSING, 2.0)
    store.transition(added.id, Status.PROCESSING, Status.FAILED, 3.0, error="bad input")
    store.close()

    text = statusview.frame(settings, None, False, None, 4.0)
    assert "\\x1b[31mred\\x1b]0;owned\\x07\\x9b2J\\x7f.jpg: bad input" in text
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in text)
    document = json.loads(statusview.frame(settings, None, True, None, 4.0))
    assert document["sessions"][0]["failed"][0]["name"] == hostile


# ---------------------------------------------------------------- what a look reads: the work under way and one page


def history_of(settings, settled: int) -> None:
    """`settled` complete, settled sessions (old-0 the oldest), each one item done, then one open session."""
    settings.state_dir.mkdir(parents=True)
    store = Store(settings.database)
    for n in range(settled):
        name, at = f"old-{n:02d}", 10.0 + n
        store.create_session(name, name, "png", at)
        item = store.add_item(name, "a.jpg", "a.png", ".jpg", b"a.jpg", at)
        store.transition(item.id, Status.QUEUED, Status.PROCESSING, at)
        store.transition(item.id, Status.PROCESSING, Status.DONE, at)
        store.set_session_state(name, {SessionState.OPEN}, SessionState.PROCESSING, at)
        store.set_session_state(name, {SessionState.PROCESSING}, SessionState.COMPLETE, at, f"{name}.zip")
        store.mark_settled(name, at)
    store.create_session("now", "now", "png", 1.0)  # the oldest of all, but still open
    store.add_item("now", "b.jpg", "b.png", ".jpg", b"b.jpg", 1.0)
    store.close()


def test_a_look_shows_the_sessions_under_way_and_the_newest_page_of_settled_ones(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    history_of(settings, statusview.PAGE_SIZE + 5)
    view = statusview.read(settings, 100.0)
    names = [s.session.name for s in view.sessions]
    assert names == ["now"] + [f"old-{n:02d}" for n in range(5, 25)], "oldest first, as ever"
    assert view.older == 5 and view.queued == 1
    assert view.sessions[1].counts["done"] == 1 and view.sessions[1].total == 1
    assert view.sessions[1].items == [], "without every item asked for, only failed items are read"
    text = statusview.frame(settings, None, False, None, 100.0)
    assert "5 older complete sessions not shown; `bgremover status --page 1` shows the next 5" in text
    document = json.loads(statusview.frame(settings, None, True, None, 100.0))
    assert (document["page"], document["page_size"], document["older_sessions"]) == (0, statusview.PAGE_SIZE, 5)


def test_an_older_page_shows_the_sessions_before_and_the_sessions_under_way_still(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    history_of(settings, statusview.PAGE_SIZE + 5)
    view = statusview.read(settings, 100.0, page=1, every_item=True)
    assert [s.session.name for s in view.sessions] == ["now"] + [f"old-{n:02d}" for n in range(5)]
    assert view.older == 0 and [i.name for i in view.sessions[1].items] == ["a.jpg"]
    assert statusview.read(settings, 100.0, page=2).sessions[0].session.name == "now"


def test_one_session_named_is_shown_whole_however_old(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    history_of(settings, statusview.PAGE_SIZE + 5)
    document = json.loads(statusview.frame(settings, "old-00", True, None, 100.0))
    [shown] = document["sessions"]
    assert shown["name"] == "old-00" and [item["name"] for item in shown["items"]] == ["a.jpg"]
