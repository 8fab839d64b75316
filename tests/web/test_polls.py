"""The page's polls on a long queue: 2,000 queued photos in 20 batches, polled by a real browser.

A poll asks only for what the page shows (the batches it has open, the first
photos of each) and gets a bare placeholder for each batch unchanged since the
page's last poll. Its size is asserted; its time is measured and printed, not
asserted (a shared machine makes any time limit flaky).
"""

from __future__ import annotations

import statistics

from tests.support.harness import Daemon, wait_for
from tests.support.web import WebPage

BATCHES, PHOTOS = 20, 100
POLL_BYTES = 50_000

# The page's own polls, as Chromium's resource timing saw them: body bytes and milliseconds each.
POLLS = """() => performance.getEntriesByType("resource")
    .filter(entry => new URL(entry.name).pathname === "/sessions")
    .map(entry => [entry.encodedBodySize, entry.responseEnd - entry.requestStart])"""

WHOLE = """async (newest) => {
    const started = performance.now();
    const text = await (await fetch("/sessions?live=1&open=" + encodeURIComponent(newest))).text();
    return [new TextEncoder().encode(text).length, performance.now() - started];
}"""


def test_a_2000_photo_queue_is_polled_in_a_few_kilobytes(tmp_path, browser):
    root, gate = tmp_path / "root", tmp_path / "gate"
    for batch in range(BATCHES):
        folder = root / "inbox" / f"shoot-{batch:02d}"
        folder.mkdir(parents=True)
        for n in range(PHOTOS):
            (folder / f"IMG_{n:04d}.jpg").write_text(f"gate {gate}")  # nothing finishes while it is measured
    # Each batch closes when full (100 photos), so the 2,000 make exactly 20 batches.
    with Daemon(root, session_idle_seconds=600) as daemon, WebPage(root) as web:
        wait_for(lambda: len(daemon.events("item_queued")) == BATCHES * PHOTOS, timeout=180, interval=1, what="taken")
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(web.url)
        first = len(page.content().encode())
        wait_for(lambda: len(page.evaluate(POLLS)) >= 12, timeout=60, what="a dozen polls")
        polls = page.evaluate(POLLS)[1:]  # the first after the load sends every tag; the others find them unchanged
        sizes, times = [size for size, _ in polls], [ms for _, ms in polls]
        # A poll from a page that has nothing yet (every batch sent whole): what a poll costs at most.
        whole = page.evaluate(WHOLE, page.locator("article.session").first.get_attribute("data-name"))
        print(
            f"2,000 queued photos in {BATCHES} batches: the page {first / 1000:.1f} kB, a poll of every batch "
            f"{whole[0] / 1000:.1f} kB in {whole[1]:.0f} ms; "
            f"{len(polls)} polls, {max(sizes) / 1000:.1f} kB at most, median {statistics.median(times):.0f} ms, "
            f"slowest {max(times):.0f} ms"
        )
        assert first < 4 * POLL_BYTES, f"the page itself is {first} bytes"
        assert max(sizes) < POLL_BYTES, sizes
        assert whole[0] < POLL_BYTES, whole
        assert page.locator("article.session").count() == BATCHES
        assert page.locator("li.item").count() <= 24, "only the newest batch's first photos are shown"
        gate.touch()
