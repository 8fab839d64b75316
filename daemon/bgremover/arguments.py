"""Value types of the command line's arguments that more than one client takes; each refusal is one line argparse prints.

Standard library only: a leaf every client may import.
"""

from __future__ import annotations

import argparse


def positive_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)
