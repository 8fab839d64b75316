"""Screenshots of the page in a real browser, kept for the docs with BGREMOVER_TEST_SCREENSHOTS=docs/web."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from tests.support.harness import wait_for


def shot(page, tmp_path: Path, name: str, top: bool = True) -> Path:
    """The page as it shows now (from its top, unless `top` is False), checked as a PNG, kept where asked."""
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    if top:
        page.evaluate("window.scrollTo(0, 0)")
    # Polled from here: wait_for_function evaluates a string in the page, which its own CSP forbids.
    wait_for(
        lambda: page.evaluate(
            "Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        ),
        what="pictures in view loaded",
    )
    page.screenshot(path=str(path), full_page=False)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300
        keep = os.environ.get("BGREMOVER_TEST_SCREENSHOTS")
        if keep:  # for docs/web.md: 64 colours keep a screenshot small
            Path(keep).mkdir(parents=True, exist_ok=True)
            image.convert("RGB").quantize(64).save(Path(keep) / path.name, optimize=True)
    return path
