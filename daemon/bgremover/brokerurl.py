"""The broker's URL: read from its file, and shown without its password.

A Redis URL carries its password (`redis://:SECRET@host:6379/0`, or
`?password=SECRET`). Whatever a log line, `bgremover status` or an error
message says of the broker goes through `shown`, and every line the logs write
is scrubbed of `secrets` (logs.py), so the password is never printed; the URL
itself travels only inside the settings, as a secret.

Standard library only, so the settings can read the file without the cluster extra installed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_QUERY_KEYS = frozenset({"password"})  # redis-py also takes the password as a query argument


def read(path: Path) -> str:
    """The URL in `path` (its first line; trailing whitespace dropped), or ValueError in one line."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ValueError(f"broker_url_file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"broker_url_file {path}: not UTF-8 text") from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(
            f"broker_url_file {path} is empty: write the broker's URL in it, say redis://:SECRET@host:6379/0"
        )
    return lines[0].strip()


def secrets(url: str) -> tuple[str, ...]:
    """The passwords in `url` as they may appear in any text: as written, and percent-decoded."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key in SECRET_QUERY_KEYS]
    except ValueError:  # not a URL at all: nothing in it can be told apart from the rest, so all of it
        return (url,) if url else ()
    decoded = [unquote(value) for value in found]
    # Longest first, so a password that contains another is masked whole.
    return tuple(sorted({value for value in [*found, *decoded] if value}, key=len, reverse=True))


def shown(url: str) -> str:
    """`url` as logs and status may show it: its password, in the address or the query, replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a broker URL that cannot be read)"
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    query = urlencode(
        [(key, MASK if key in SECRET_QUERY_KEYS else value) for key, value in parse_qsl(parts.query, True)],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
