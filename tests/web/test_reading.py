"""Many pollers, few looks: a look is shared while it is young and the database has not changed since."""

from __future__ import annotations

import asyncio
import sqlite3

from bgremover.web import reading


class Looks:
    """A SharedLooks over a real database file, counting the looks it really takes."""

    def __init__(self, database) -> None:
        self.shared = reading.SharedLooks(lambda: reading.database_stamp(database))
        self.taken = 0

    def compute(self) -> int:
        self.taken += 1
        return self.taken

    def ask(self, times: int) -> list[int]:
        async def run() -> list[int]:
            return [await self.shared.get("status", self.compute) for _ in range(times)]

        return asyncio.run(run())


def queue(tmp_path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "queue.sqlite3")
    connection.execute("pragma journal_mode=wal")  # as the daemon's store
    connection.execute("create table t (x)")
    connection.commit()
    return connection


def test_a_young_look_of_an_unchanged_database_is_shared(monkeypatch, tmp_path):
    # Closed here, not whenever the garbage collector frees it: closing checkpoints the log, a change.
    queue(tmp_path).close()
    monkeypatch.setattr(reading, "REUSE_S", 60.0)
    looks = Looks(tmp_path / "queue.sqlite3")
    assert looks.ask(5) == [1, 1, 1, 1, 1]


def test_a_commit_or_age_means_a_new_look(monkeypatch, tmp_path):
    connection = queue(tmp_path)
    monkeypatch.setattr(reading, "REUSE_S", 60.0)
    looks = Looks(tmp_path / "queue.sqlite3")
    assert looks.ask(2) == [1, 1]
    connection.execute("insert into t values (1)")
    connection.commit()
    assert looks.ask(2) == [2, 2], "a look from before the commit was handed out after it"
    monkeypatch.setattr(reading, "REUSE_S", 0.0)
    assert looks.ask(3) == [3, 4, 5]
