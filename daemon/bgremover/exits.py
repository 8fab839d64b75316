"""What every command shares: its exit codes and the one way it says why it failed.

Exit codes: 0 success, 1 the work failed (say an unreadable image for `remove`),
2 a usage or configuration problem (a bad setting, a damaged model file).

A leaf: it imports nothing of bgremover's, so the three clients (cli/, web/,
bench/) all import it without importing one another.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int) -> int:
    """Each line of `message` on stderr after "bgremover: "; returns `code` for the command to return."""
    for line in message.splitlines():
        print(f"bgremover: {line}", file=sys.stderr)
    return code
