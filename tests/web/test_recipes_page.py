"""The page shows a session's recipe files a channel would refuse: their count, and each one's reason."""

from __future__ import annotations

import html

from tests.support.harness import Daemon
from tests.support.recipes import QUICK, at_the_edge, drop_folder, picture
from tests.support.web import WebPage


def test_the_page_counts_the_files_not_compliant_and_says_why(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, recipes="amazon", **QUICK) as daemon, WebPage(root) as web:
        drop_folder(root, "edge", {"cut.jpg": at_the_edge(), "whole.jpg": picture(1)})
        status = daemon.wait_complete("edge")
        code, _, body = web.get("/sessions")
    reasons = [r["reason"] for i in status["items"] for r in i["recipes"] if not r["compliant"]]
    assert code == 200 and status["non_compliant"] == len(reasons) >= 1
    text = html.unescape(body.decode())
    assert f"{len(reasons)} recipe file{'s' if len(reasons) != 1 else ''} not compliant" in text
    for reason in reasons:
        assert f"Not compliant with amazon: {reason}" in text
