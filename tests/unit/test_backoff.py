"""The retry clock for a folder that refuses writes, and what counts as such a refusal."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from bgremover.backoff import Backoff, describe, is_storage_error


def test_a_healthy_folder_is_always_due():
    backoff = Backoff()
    assert backoff.due(0.0) and not backoff.failing
    assert backoff.succeeded(5.0) is None  # no outage to end


def test_each_failure_doubles_the_wait_up_to_the_cap():
    backoff = Backoff(first=1.0, cap=8.0)
    waits = []
    now = 100.0
    for _ in range(6):
        backoff.failed(now)
        waits.append(backoff.retry_at - now)
        assert not backoff.due(now) and backoff.due(backoff.retry_at)
        now = backoff.retry_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_an_outage_is_reported_once_when_it_begins_and_once_when_it_ends():
    backoff = Backoff()
    assert backoff.failed(10.0) is True
    assert backoff.failed(11.0) is False and backoff.failed(13.0) is False
    assert backoff.succeeded(20.0) == 10.0
    assert backoff.due(20.0) and not backoff.failing
    assert backoff.failed(30.0) is True  # a new outage, a new line
    assert backoff.retry_at == 31.0  # and the wait starts from the first step again


def test_a_refusal_of_a_write_begun_before_the_folder_took_writes_again_starts_no_outage():
    backoff = Backoff()
    assert backoff.failed(10.0) is True
    assert backoff.succeeded(20.0) == 10.0  # a write begun at 20 worked: the outage is over
    assert backoff.failed(21.0, tried_at=19.5) is False  # a ZIP build begun at 19.5 answers late
    assert not backoff.failing and backoff.due(21.0)
    assert backoff.failed(22.0, tried_at=21.0) is True  # begun after: the folder refuses again


def test_a_write_begun_before_an_outage_does_not_end_it():
    backoff = Backoff()
    assert backoff.failed(10.0) is True
    assert backoff.succeeded(12.0, tried_at=9.0) is None  # it got through before the folder turned
    assert backoff.failing and not backoff.due(10.5)
    assert backoff.succeeded(13.0, tried_at=12.5) == 3.0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG])
def test_a_disk_that_refuses_a_write_is_a_storage_error(code):
    assert is_storage_error(OSError(code, "refused"))


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "gone"),
        OSError(errno.EIO, "bad sector"),
        OSError("encoder error -2"),
        ValueError("not an image"),
        sqlite3.OperationalError("no such table: items"),
    ],
)
def test_other_errors_are_not(exc):
    assert not is_storage_error(exc)


def test_sqlite_says_full_or_read_only_in_its_own_words(tmp_path):
    assert is_storage_error(sqlite3.OperationalError("database or disk is full"))
    assert is_storage_error(sqlite3.OperationalError("attempt to write a readonly database"))
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/x")) == "No space left on device"
    assert describe(sqlite3.OperationalError("database or disk is full")) == "database or disk is full"
