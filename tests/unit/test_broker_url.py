"""The broker's URL: read from its file, shown without its password, and scrubbed from every log line."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from bgremover import logs
from bgremover.brokerurl import secrets, shown
from bgremover.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("url", "seen"),
    [
        ("redis://:s3cret@broker.lan:6379/0", "redis://:***@broker.lan:6379/0"),
        ("rediss://bg:s3cret@broker.lan:6380/1", "rediss://bg:***@broker.lan:6380/1"),
        ("redis://:p%40ss@broker.lan/0", "redis://:***@broker.lan/0"),
        ("redis://broker.lan:6379/0?password=s3cret&db=2", "redis://broker.lan:6379/0?password=***&db=2"),
        ("redis://broker.lan:6379/0", "redis://broker.lan:6379/0"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url, seen):
    assert shown(url) == seen


def test_the_secrets_of_a_url_are_its_password_as_written_and_decoded():
    assert secrets("redis://:p%40ss@broker.lan/0") == ("p%40ss", "p@ss")
    assert secrets("redis://broker.lan/0") == ()


def test_broker_url_file_gives_broker_url_and_its_first_line_only(tmp_path):
    url_file = tmp_path / "broker-url"
    url_file.write_text("redis://:s3cret@broker.lan:6379/0\n\n")
    settings = load_settings(None, root=tmp_path, runner="celery", broker_url_file=url_file)
    assert settings.broker_url.get_secret_value() == "redis://:s3cret@broker.lan:6379/0"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize(
    ("content", "given", "said"),
    [
        (None, {}, "broker_url_file {file}: No such file or directory"),
        ("\n", {}, "broker_url_file {file} is empty: write the broker's URL in it, say redis://:SECRET@host:6379/0"),
        ("redis://h/0", {"broker_url": "redis://:s3cret@h/0"}, "broker_url and broker_url_file are both set: keep one"),
    ],
)
def test_a_broker_url_file_that_cannot_serve_is_refused_in_one_line(tmp_path, content, given, said):
    url_file = tmp_path / "broker-url"
    if content is not None:
        url_file.write_text(content)
    with pytest.raises(SettingsError) as refused:
        load_settings(None, root=tmp_path, runner="celery", broker_url_file=url_file, **given)
    assert str(refused.value) == said.format(file=url_file)
    assert "s3cret" not in str(refused.value)


def test_every_log_line_is_scrubbed_of_the_password_wherever_it_hides(tmp_path):
    out = io.StringIO()
    logs.configure("json", "info", stream=out, hidden=secrets("redis://:p%40ss-word@broker.lan/0"))
    try:
        log = structlog.get_logger()
        log.warning("said", url="redis://:p%40ss-word@broker.lan/0", nested=["p@ss-word"])
        try:
            raise ConnectionError("AUTH p@ss-word refused")
        except ConnectionError:
            log.exception("failed")
    finally:
        logs.configure("json", "info")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["said", "failed"]
    assert (lines[0]["url"], lines[0]["nested"]) == ("redis://:***@broker.lan/0", ["***"])
    assert "AUTH *** refused" in lines[1]["exception"]
    assert "ss-word" not in out.getvalue()
