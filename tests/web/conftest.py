"""A root the real daemon has worked on, copied fresh for each test that wants one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.harness import Daemon, drop, wait_for

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    """Debian's headless Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def worked_root(tmp_path_factory) -> Path:
    """A root with one complete session, `shoot`: ok.jpg done, broken.jpg failed; the daemon stopped."""
    root = tmp_path_factory.mktemp("worked") / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/ok.jpg", "ok")
        drop(root / "inbox", "shoot/broken.jpg", "bad-input")
        daemon.wait_complete("shoot")
        # The emptied folder goes once it has been quiet for a while (a copy may still be filling it).
        wait_for(lambda: not (root / "inbox" / "shoot").exists(), timeout=60, what="the emptied shoot folder removed")
    return root


@pytest.fixture
def root(worked_root, tmp_path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(worked_root, copy, symlinks=True)
    return copy
