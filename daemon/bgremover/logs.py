"""The only structlog.configure call: JSON lines under systemd, colours on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def name_session_and_item(logger, method: str, event: dict) -> dict:
    """Every line says which session and item it is about: null when it is about neither.

    So a reader can filter on the fields without knowing which events carry them.
    """
    event.setdefault("session", None)
    event.setdefault("item", None)
    return event


class Hiding:
    """The renderer, and then every secret in what it wrote replaced by ***.

    Applied to the finished line, not to the fields, so that nothing escapes
    it: an exception's text, a traceback, a value nested in a list.
    """

    def __init__(self, renderer, hidden: tuple[str, ...]) -> None:
        self.renderer, self.hidden = renderer, hidden

    def __call__(self, logger, method: str, event: dict) -> str:
        line = self.renderer(logger, method, event)
        for secret in self.hidden:
            line = line.replace(secret, "***")
        return line


def configure(log_format: str = "auto", log_level: str = "info", stream=None, hidden: tuple[str, ...] = ()) -> None:
    """`hidden`: the secrets no line may show (the broker's password, as brokerurl.secrets finds it)."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            name_session_and_item,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Hiding(renderer, hidden) if hidden else renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[log_level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
