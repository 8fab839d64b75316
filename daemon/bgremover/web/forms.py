"""A multipart form read as it arrives: its small fields kept, each file handed to a writer chunk by chunk.

Starlette's own parser spools every file to a temporary folder first and
checks no size until the whole body is in; this one stops at the first byte
over a limit, so an upload too large costs neither the disk nor the wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, NamedTuple

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FIELD_LIMIT = 64 * 1024  # bytes in a field that is not a file: a name, a session's name
# Each part costs a little memory and work whatever its size, so their number is bounded as the bytes are:
# a folder of more files than this goes in several uploads (the page says so), and no form of ours has
# more than a handful of plain fields.
FILES_LIMIT = 1000
FIELDS_LIMIT = 50
PART_HEADERS_LIMIT = 8  # a browser sends two: Content-Disposition and Content-Type
PART_HEADER_BYTES = 4096  # a part's headers in all; a file name is at most a few hundred bytes
MB = 1024 * 1024


HEADERS_REFUSED = "the headers of a part of the form are too many or too large"


class FormRefused(Exception):
    """The body cannot be taken; `status` is the HTTP status to answer with, the message one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Limits(NamedTuple):
    file_bytes: int
    request_bytes: int

    @classmethod
    def in_mb(cls, file_mb: float, request_mb: float) -> Limits:
        return cls(int(file_mb * MB), int(request_mb * MB))


def size_text(limit: int) -> str:
    return f"{limit / MB:g} MB"


# (field name, file name as sent, the fields read so far) -> where the file's bytes go
OpenFile = Callable[[str, str, dict[str, str]], BinaryIO]


class _Parts:
    """python-multipart's callbacks: headers gathered per part, data routed to a file or a field."""

    def __init__(self, open_file: OpenFile, limits: Limits) -> None:
        self.open_file = open_file
        self.limits = limits
        self.fields: dict[str, str] = {}
        self.headers: dict[bytes, bytes] = {}
        self.header = self.value = b""
        self.name, self.filename = "", ""
        self.out: BinaryIO | None = None
        self.size = 0
        self.buffer = bytearray()
        self.in_headers = False
        self.header_bytes = 0
        self.files = self.plain = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.data,
            "on_part_end": self.end,
        }

    def begin(self) -> None:
        self.headers, self.out, self.size, self.buffer = {}, None, 0, bytearray()
        self.in_headers, self.header_bytes = True, 0

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.count_header_bytes(end - start)
        self.header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.count_header_bytes(end - start)
        self.value += data[start:end]

    def count_header_bytes(self, size: int) -> None:
        # Counted as they arrive: a header that never ends is refused at the limit, not once it is whole.
        self.header_bytes += size
        if self.header_bytes > PART_HEADER_BYTES:
            raise FormRefused(413, f"{HEADERS_REFUSED}: over {PART_HEADER_BYTES // 1024} KB; nothing was uploaded")

    def header_end(self) -> None:
        self.headers[self.header.lower()] = self.value
        self.header = self.value = b""
        if len(self.headers) > PART_HEADERS_LIMIT:
            raise FormRefused(413, f"{HEADERS_REFUSED}: over {PART_HEADERS_LIMIT} of them; nothing was uploaded")

    def headers_finished(self) -> None:
        self.in_headers = False
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            # Browsers send the name as UTF-8; a byte that is not stays itself, shown later as %XX.
            self.filename = params[b"filename"].decode("utf-8", "surrogateescape")
            self.count_part(file=True)
            self.out = self.open_file(self.name, self.filename, self.fields)
        else:
            self.count_part(file=False)

    def count_part(self, file: bool) -> None:
        if file:
            self.files += 1
            if self.files > FILES_LIMIT:
                raise FormRefused(
                    413, f"the upload holds over {FILES_LIMIT} files; nothing was uploaded: send fewer at a time"
                )
            return
        self.plain += 1
        if self.plain > FIELDS_LIMIT:
            raise FormRefused(413, f"the form holds over {FIELDS_LIMIT} fields; nothing was uploaded")

    def data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.size += len(chunk)
        if self.out is None:
            if self.size > FIELD_LIMIT:
                raise FormRefused(413, f"the form field '{self.name}' is over {FIELD_LIMIT // 1024} KB")
            self.buffer += chunk
            return
        if self.size > self.limits.file_bytes:
            raise FormRefused(
                413,
                f"{self.filename} is over the limit of {size_text(self.limits.file_bytes)} "
                "per file; nothing was uploaded",
            )
        self.out.write(chunk)

    def end(self) -> None:
        if self.out is None:
            self.fields[self.name] = self.buffer.decode("utf-8", "replace")
        else:
            self.out.close()
            self.out = None


async def read_form(
    content_type: str,
    body: AsyncIterator[bytes],
    open_file: OpenFile,
    limits: Limits,
    content_length: int | None = None,
) -> dict[str, str]:
    """The form's plain fields; its files went to `open_file`'s writers. FormRefused when it cannot be taken."""
    if content_length is not None and content_length > limits.request_bytes:
        raise FormRefused(
            413, f"the upload is over the limit of {size_text(limits.request_bytes)} per request; nothing was uploaded"
        )
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise FormRefused(400, "expected a multipart/form-data form")
    parts = _Parts(open_file, limits)
    parser = MultipartParser(params[b"boundary"], callbacks=parts.callbacks())
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > limits.request_bytes:
                raise FormRefused(
                    413,
                    f"the upload is over the limit of {size_text(limits.request_bytes)} "
                    "per request; nothing was uploaded",
                )
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        if parts.in_headers:  # newer python-multipart bounds a part's headers itself, tighter than we do
            raise FormRefused(
                413,
                f"{HEADERS_REFUSED}, or malformed: at most {PART_HEADERS_LIMIT} of them, "
                f"{PART_HEADER_BYTES // 1024} KB in all; nothing was uploaded",
            ) from None
        raise FormRefused(400, "the form could not be read: its multipart body is malformed") from None
    finally:
        if parts.out is not None:
            parts.out.close()
    return parts.fields
