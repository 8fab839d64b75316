"""Crash soak: the real daemon and model, killed at random moments, must lose and repeat nothing.

With 1, 2 and 3 job slots: images (40 by default, small and each distinct: its own size, shape and noise)
are dropped in waves, loose and in a few folders (one with subfolders), while a
seeded random.Random kills the daemon with SIGKILL at random moments (at least
--soak-kills times, 6 by default) and starts it again, kills the running job
process with SIGKILL now and then, and once freezes a running job with SIGSTOP,
which must time out and be killed (its status JSON says job_timeout_seconds).
Items failed by those job kills are retried through their retry markers, as a
user would, so that in the end every image is done. Meanwhile a thread reads
every outbox/*.json every 50 ms (and every ZIP every second): each read must
parse, and its counts must add up.

At the end, after a clean SIGTERM stop: every dropped image is in exactly one
ZIP exactly once and decodes as an RGBA PNG of its original size, every session
is complete with done == total, and no temp file, original, result or inbox file
is left (keep_originals = false, so state/originals must be empty).

The kill moments are tied to progress (the number of finished items), so they
spread over the whole run whatever the machine's speed. `make soak` runs 1,000 images
and 50 kills per slot count; longer by hand:

    pytest -m soak -s --soak-images 2000 --soak-kills 100 --soak-seed 7

A failure message starts with the one-line summary, seed included; rerunning
with that --soak-seed replays the same plan (the moments are only as
repeatable as the timing of a real machine).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import signal
import sqlite3
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from tests.support.harness import Daemon
from tests.support.images import encoded, shape_on_texture

FOLDERS = ("album_a", "album_b", "album_c", "album_d")  # no "-N" ending: "-N" marks a spilled session
NESTED = ("", "sub/", "sub/deep/")  # album_b's files go one or two folders down, too
JOB_TIMEOUT_SECONDS = 8.0  # a real job on these images takes well under a second
SETTINGS = {
    "keep_originals": "false",
    "max_session_items": 20,  # small enough that loose sessions and folders also close "full"
    "session_idle_seconds": 5,
    "job_timeout_seconds": JOB_TIMEOUT_SECONDS,
}
KILLED_ERROR = "the job was killed by SIGKILL (perhaps out of memory)"
TIMEOUT_ERROR = f"the job took longer than {JOB_TIMEOUT_SECONDS:g} s (job_timeout_seconds) and was killed"
STALL_SECONDS = 180.0  # no item finishing for this long is a hang, not a slow machine
MAX_ATTEMPTS = 12  # an item failing more often than our kills explain is stuck; stop retrying it


# ---------------------------------------------------------------- options and bookkeeping


@dataclass
class Options:
    images: int
    kills: int
    seed: int


@pytest.fixture
def options(request) -> Options:
    config = request.config
    opts = Options(config.getoption("--soak-images"), config.getoption("--soak-kills"), config.getoption("--soak-seed"))
    assert opts.images >= 1 and opts.kills >= 0, opts
    # A hang guard sized to the run (the suite's 300 s is too tight on a busy machine, and a
    # soak by hand runs far longer); func_only on both markers lets this later one count.
    budget = 300 + 3 * opts.images + 30 * opts.kills
    request.node.add_marker(pytest.mark.timeout(budget, func_only=True), append=False)
    return opts


@dataclass
class Tally:
    images: int
    seed: int
    job_slots: int
    started: float = field(default_factory=time.monotonic)
    daemon_kills: int = 0
    restarts: int = 0
    job_kills: int = 0  # SIGKILLs that reached a live job process
    job_kill_misses: int = 0  # no job running when we looked, or it ended before the signal
    sigstops: int = 0
    json_reads: int = 0
    json_failures: list[str] = field(default_factory=list)
    zip_reads: int = 0
    zip_failures: list[str] = field(default_factory=list)
    retries: int = 0
    failures: Counter = field(default_factory=Counter)  # error -> how many item failures we saw
    waves: int = 0
    waves_while_down: int = 0
    lost: int | str = "?"
    duplicated: int | str = "?"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        return (
            f"crash soak seed={self.seed} job_slots={self.job_slots}: images={self.images} daemon_kills={self.daemon_kills} "
            f"job_kills={self.job_kills} sigstops={self.sigstops} restarts={self.restarts} "
            f"json_reads={self.json_reads} json_failures={len(self.json_failures)} zip_reads={self.zip_reads} "
            f"lost={self.lost} duplicated={self.duplicated} seconds={time.monotonic() - self.started:.1f}"
        )


# ---------------------------------------------------------------- images and drops


@dataclass
class Dropped:
    relative: str  # as dropped, relative to the inbox
    data: bytes
    size: tuple[int, int]

    @property
    def key(self) -> str:
        """The dropped name without its extension: what its ZIP member maps back to."""
        return self.relative.rsplit(".", 1)[0]


def make_images(count: int, rng: random.Random) -> list[Dropped]:
    made = []
    for n in range(count):
        size = (40 + n % 29, 32 + (n * 7) % 23)  # sizes vary, so a member shows whose cutout it is
        image, _ = shape_on_texture(size, "disc" if n % 2 else "square", seed=n)
        ext, data = ("jpg", encoded(image, "JPEG", quality=90)) if n % 3 == 0 else ("png", encoded(image, "PNG"))
        folder = ""
        if rng.random() < 0.25:
            folder = rng.choice(FOLDERS) + "/"
            if folder == "album_b/":
                folder += rng.choice(NESTED)
        made.append(Dropped(f"{folder}img-{n:05d}.{ext}", data, size))
    return made


def drop(inbox: Path, staging: Path, image: Dropped) -> None:
    """Write beside the root, then rename into the inbox, as a careful copy tool does."""
    source = staging / image.relative.replace("/", "__")
    source.write_bytes(image.data)
    target = inbox / image.relative
    for _ in range(100):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
            return
        except FileNotFoundError:
            # The daemon removed the folder, emptied when its session closed, between our
            # mkdir and the rename: what a user's copy tool would meet too. Make it again.
            time.sleep(0.01)
    raise AssertionError(f"could not drop {image.relative}: its folder kept vanishing")


def waves_of(images: list[Dropped], rng: random.Random) -> list[list[Dropped]]:
    biggest = max(10, len(images) // 5)
    waves, rest = [], list(images)
    while rest:
        size = rng.randint(5, biggest)
        waves.append(rest[:size])
        rest = rest[size:]
    return waves


# ---------------------------------------------------------------- reading what the daemon shows


def inconsistency(doc: dict) -> str | None:
    """Why a status document's numbers do not add up, or None."""
    items, counts = doc["items"], doc["counts"]
    if doc["total"] != len(items) or sum(counts.values()) != doc["total"]:
        return f"total {doc['total']}, {len(items)} items, counts {counts}"
    if Counter(item["status"] for item in items) != Counter({k: v for k, v in counts.items() if v}):
        return f"counts {counts} do not match the items' statuses"
    if len({item["name"] for item in items}) != len(items):
        return "an item name repeats"
    return None


def read_statuses(outbox: Path, tally: Tally) -> dict[str, dict]:
    """Every status JSON as it is now; a read that does not parse, or whose numbers do not add up, is recorded."""
    found = {}
    for name in sorted(os.listdir(outbox)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            data = (outbox / name).read_bytes()
        except FileNotFoundError:
            continue  # gone between listdir and open: fine
        with tally.lock:
            tally.json_reads += 1
        try:
            doc = json.loads(data.decode("utf-8"))
            problem = inconsistency(doc)
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"does not parse: {exc}: {data[:120]!r}...{data[-60:]!r}"
        if problem:
            with tally.lock:
                tally.json_failures.append(f"{name}: {problem}")
            continue
        found[name[: -len(".json")]] = doc
    return found


def read_zips(outbox: Path, tally: Tally) -> None:
    for name in sorted(os.listdir(outbox)):
        if not name.endswith(".zip") or name.startswith("."):
            continue
        try:
            with zipfile.ZipFile(outbox / name) as archive:
                names = archive.namelist()
                bad = archive.testzip()
        except FileNotFoundError:
            continue
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            with tally.lock:
                tally.zip_failures.append(f"{name}: {exc}")
            continue
        with tally.lock:
            tally.zip_reads += 1
            if bad is not None or len(set(names)) != len(names):
                tally.zip_failures.append(f"{name}: bad member {bad!r} or repeated names {sorted(names)}")


class OutboxReader:
    """A user's script polling the outbox: every status JSON every 50 ms, every ZIP every second."""

    def __init__(self, outbox: Path, tally: Tally) -> None:
        self.outbox, self.tally = outbox, tally
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, name="soak-outbox-reader", daemon=True)

    def run(self) -> None:
        rounds = 0
        while not self.halt.wait(0.05):
            rounds += 1
            try:
                read_statuses(self.outbox, self.tally)
                if rounds % 20 == 0:
                    read_zips(self.outbox, self.tally)
            except Exception as exc:  # noqa: BLE001 - counted, not lost with the thread
                with self.tally.lock:
                    self.tally.json_failures.append(f"reader: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(10)


def running_job(database: Path) -> tuple[int, str, str, int] | None:
    """(pid, session, item, attempt) of the item being processed, from a read-only look at the queue."""
    if not database.exists():
        return None
    try:
        db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        return db.execute(
            "SELECT job_pid, session, name, attempts FROM items"
            " WHERE status = 'processing' AND job_pid IS NOT NULL ORDER BY id LIMIT 1"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()


def is_job_of(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(root).encode() in cmdline and b"bgremover.job" in cmdline


def process_state(pid: int) -> str | None:
    """R, S, T (stopped), Z (exited, not yet reaped)...; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def log_events(log_path: Path) -> tuple[list[dict], int]:
    """Every JSON log line of every life, and how many lines a kill cut short (they do not parse)."""
    events, torn = [], 0
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                torn += 1
    return events, torn


def member_key(session: str, member: str) -> str:
    """The dropped name (without extension) a ZIP member stands for."""
    stem = member[: -len(".png")] if member.endswith(".png") else member
    if session.startswith("batch-"):
        return stem
    return f"{re.sub(r'-[0-9]+$', '', session)}/{stem}"


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, tmp_path: Path, opts: Options, job_slots: int = 1) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.root = tmp_path / "root"
        self.staging = tmp_path / "staging"
        self.staging.mkdir()
        self.daemon = Daemon(self.root, fake_jobs=False, job_slots=job_slots, **SETTINGS)
        self.inbox, self.outbox = self.root / "inbox", self.root / "outbox"
        self.database = self.root / "state" / "bgremover.sqlite3"
        self.tally = Tally(opts.images, opts.seed, job_slots)
        self.reader = OutboxReader(self.outbox, self.tally)
        self.images = make_images(opts.images, self.rng)
        order = list(self.images)
        self.rng.shuffle(order)
        self.waves = waves_of(order, self.rng)
        self.dropped = 0
        self.low_water = 0
        self.retried: set[tuple[str, str, int]] = set()
        self.unexpected: list[str] = []
        self.stopped_pids: list[int] = []
        self.last_progress = (0, time.monotonic())

    # -- the plan: kill moments tied to the number of finished items --------------

    def plan(self) -> list[tuple[int, str]]:
        n = self.opts.images
        job_kills = max(3, self.opts.kills // 2)
        actions = [(self.rng.randint(0, n - 1), "daemon") for _ in range(self.opts.kills)]
        actions += [(self.rng.randint(0, n - 1), "job") for _ in range(job_kills)]
        actions.append((self.rng.randint(n // 4, max(n // 4, 3 * n // 4)), "sigstop"))
        return sorted(actions)

    def run(self) -> None:
        actions = self.plan()
        self.drop_wave()  # waiting in the inbox before the first start
        self.daemon.start()
        self.reader.start()
        while actions or self.waves:
            statuses = read_statuses(self.outbox, self.tally)
            finished = self.retry_failed(statuses)
            self.check_progress(finished, "the soak")
            # The last wave waits for the SIGSTOP, so that a job is still there to freeze.
            hold = len(self.waves) == 1 and any(kind == "sigstop" for _, kind in actions) and self.dropped > finished
            if self.waves and self.dropped - finished <= self.low_water and not hold:
                self.drop_wave()
            if actions and finished >= actions[0][0]:
                threshold, kind = actions.pop(0)
                time.sleep(self.rng.uniform(0, 0.5))  # a random moment of the job in flight
                if kind == "daemon":
                    self.kill_daemon()
                elif kind == "job":
                    self.kill_job()
                elif not self.stop_a_job():
                    assert self.waves or self.dropped > finished, "no job was left to SIGSTOP"
                    actions.insert(0, (threshold, kind))  # no job running now: again once more arrive
            time.sleep(0.1)
        self.wait_until_all_done()
        code = self.daemon.stop()
        assert code == 0, f"the daemon's final SIGTERM stop exited {code}"
        self.reader.stop()
        read_statuses(self.outbox, self.tally)
        read_zips(self.outbox, self.tally)

    def drop_wave(self) -> None:
        wave = self.waves.pop(0)
        for image in wave:
            drop(self.inbox, self.staging, image)
        self.dropped += len(wave)
        self.tally.waves += 1
        self.low_water = self.rng.randint(0, 30)

    def retry_failed(self, statuses: dict[str, dict]) -> int:
        """Touch the retry marker of each failed item, as a user would; returns the items finished so far."""
        finished = 0
        for doc in statuses.values():
            for item in doc["items"]:
                if item["status"] == "done":
                    finished += 1
                if item["status"] not in ("failed", "cancelled"):
                    continue
                finished += 1
                key = (doc["session"], item["name"], item["attempts"])
                if key in self.retried:
                    continue
                self.retried.add(key)
                self.tally.failures[item["error"]] += 1
                if item["error"] not in (KILLED_ERROR, TIMEOUT_ERROR):
                    self.unexpected.append(
                        f"{doc['session']}/{item['name']} attempt {item['attempts']}: {item['error']}"
                    )
                if item["attempts"] >= MAX_ATTEMPTS:
                    self.unexpected.append(
                        f"{doc['session']}/{item['name']} failed {item['attempts']} times; left failed"
                    )
                    continue
                marker = self.root / item["retry_marker"]
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                self.tally.retries += 1
        return finished

    def check_progress(self, finished: int, what: str) -> None:
        count, since = self.last_progress
        if finished != count:
            self.last_progress = (finished, time.monotonic())
        elif time.monotonic() - since > STALL_SECONDS:
            raise AssertionError(f"no item finished for {STALL_SECONDS:g} s during {what} ({finished} finished)")

    # -- the disturbances -----------------------------------------------------------

    def kill_daemon(self) -> None:
        self.daemon.kill()  # SIGKILL: no clean-up of any kind; its job runs on in its own process group
        self.tally.daemon_kills += 1
        if self.waves and self.rng.random() < 0.3:
            self.drop_wave()  # files that arrive while no daemon runs are taken at the next start
            self.tally.waves_while_down += 1
        if self.rng.random() < 0.5:
            time.sleep(self.rng.uniform(0, 1.5))  # often long enough for the orphaned job to finish alone
        self.daemon.start()
        self.tally.restarts += 1

    def find_job(self, timeout: float) -> tuple[int, str, str, int] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = running_job(self.database)
            if found and is_job_of(found[0], self.root):
                return found
            time.sleep(0.02)
        return None

    def kill_job(self) -> None:
        found = self.find_job(5)
        if found is None:
            self.tally.job_kill_misses += 1
            return
        time.sleep(self.rng.uniform(0, 0.25))
        if process_state(found[0]) in (None, "Z"):
            self.tally.job_kill_misses += 1
            return
        try:
            os.kill(found[0], signal.SIGKILL)
        except ProcessLookupError:
            self.tally.job_kill_misses += 1
            return
        self.tally.job_kills += 1

    def stop_a_job(self) -> bool:
        """Freeze a running job: the daemon must time it out, kill it and fail its item with a sentence saying so.

        False when no job ran to freeze (the queue was empty for a while).
        """
        for _ in range(5):
            found = self.find_job(2)
            if found is None:
                continue
            pid, session, name, attempt = found
            os.kill(pid, signal.SIGSTOP)
            self.stopped_pids.append(pid)
            time.sleep(0.05)
            if process_state(pid) == "T":
                break  # frozen mid-job; otherwise it had exited already: try the next one
        else:
            return False
        self.tally.sigstops += 1

        def timed_out() -> dict | None:
            doc = read_statuses(self.outbox, self.tally).get(session)
            for item in doc["items"] if doc else []:
                if item["name"] == name and item["attempts"] == attempt and item["status"] != "processing":
                    return item
            return None

        deadline = time.monotonic() + JOB_TIMEOUT_SECONDS + 60
        while (item := timed_out()) is None:
            assert time.monotonic() < deadline, f"the SIGSTOPped job of {session}/{name} was never timed out"
            time.sleep(0.1)
        assert item["status"] == "failed" and "job_timeout_seconds" in (item["error"] or ""), (
            f"the SIGSTOPped job of {session}/{name}: {item}"
        )
        deadline = time.monotonic() + 10
        while process_state(pid) is not None:
            assert time.monotonic() < deadline, f"the SIGSTOPped job {pid} was timed out but still exists"
            time.sleep(0.05)
        return True  # its retry marker is touched by retry_failed, like every other failure's

    # -- the end ----------------------------------------------------------------

    def wait_until_all_done(self) -> None:
        deadline = time.monotonic() + 120 + 3 * self.opts.images
        while True:
            statuses = read_statuses(self.outbox, self.tally)
            finished = self.retry_failed(statuses)
            done = sum(doc["counts"]["done"] for doc in statuses.values())
            complete = all(doc["state"] == "complete" for doc in statuses.values())
            inbox_files = [p for p in self.inbox.rglob("*") if not p.is_dir()]
            if done == self.opts.images and complete and not inbox_files:
                return
            stuck = [u for u in self.unexpected if "left failed" in u]
            assert not stuck, f"items stuck failed: {stuck}"
            self.check_progress(finished, "the wait for the last items")
            assert time.monotonic() < deadline, (
                f"not all done: {done} of {self.opts.images} done, incomplete sessions "
                f"{[name for name, doc in statuses.items() if doc['state'] != 'complete']}, "
                f"inbox files {inbox_files[:5]}"
            )
            time.sleep(0.2)

    def clean_up(self) -> None:
        """Whatever happened: the reader stopped, frozen jobs gone, and the daemon stopped by SIGTERM."""
        self.reader.halt.set()
        if self.reader.thread.is_alive():
            self.reader.thread.join(10)
        for pid in self.stopped_pids:
            if is_job_of(pid, self.root):
                os.kill(pid, signal.SIGKILL)
        process = self.daemon.process
        if process is not None and process.poll() is None:
            try:
                self.daemon.stop()
            except Exception:  # noqa: BLE001 - a stuck daemon is killed; the test fails anyway
                self.daemon.kill()
                # The next life would kill the job it left; with no next life, do it here.
                found = running_job(self.database)
                if found and is_job_of(found[0], self.root):
                    os.killpg(found[0], signal.SIGKILL)

    def final_problems(self) -> list[str]:
        """Everything wrong with the root once the daemon is stopped; sets tally.lost and tally.duplicated."""
        root, problems = self.root, []
        statuses = read_statuses(self.outbox, self.tally)
        expected = {image.key: image for image in self.images}
        seen: Counter = Counter()
        not_rgba = []
        for path in sorted(self.outbox.glob("*.zip")):
            session = path.stem
            with zipfile.ZipFile(path) as archive:
                members = {info.filename: archive.read(info) for info in archive.infolist()}
            doc = statuses.get(session)
            outputs = {item["output"] for item in doc["items"]} if doc else set()
            if set(members) != outputs:
                problems.append(f"{session}.zip holds {sorted(set(members) ^ outputs)} unlike its status JSON")
            for member, data in members.items():
                key = member_key(session, member)
                seen[key] += 1
                image = expected.get(key)
                with Image.open(io.BytesIO(data)) as cutout:
                    cutout.load()
                    if (cutout.format, cutout.mode, cutout.size) != ("PNG", "RGBA", image.size if image else None):
                        not_rgba.append(f"{session}/{member}: {cutout.format} {cutout.mode} {cutout.size}")
        lost = sorted(set(expected) - set(seen))
        duplicated = sorted(key for key, count in seen.items() if count > 1)
        strangers = sorted(set(seen) - set(expected))
        self.tally.lost, self.tally.duplicated = len(lost), len(duplicated)
        if lost:
            problems.append(f"lost {len(lost)}: {lost[:20]}")
        if duplicated:
            problems.append(f"duplicated {len(duplicated)}: {[(k, seen[k]) for k in duplicated[:20]]}")
        if strangers:
            problems.append(f"ZIP members that map to no dropped image: {strangers[:20]}")
        if sum(seen.values()) != self.opts.images:
            problems.append(f"{sum(seen.values())} ZIP members in all, not {self.opts.images}")
        if not_rgba:
            problems.append(f"members that are not RGBA PNGs of their original's size: {not_rgba[:10]}")

        items = sum(doc["total"] for doc in statuses.values())
        if items != self.opts.images:
            problems.append(f"{items} items across the status JSONs, not {self.opts.images}")
        for name, doc in statuses.items():
            counts = doc["counts"]
            if (doc["state"], doc["zip"], counts["done"]) != ("complete", f"{name}.zip", doc["total"]) or any(
                counts[s] for s in ("queued", "processing", "failed", "cancelled")
            ):
                problems.append(f"session {name}: {doc['state']}, zip {doc['zip']}, total {doc['total']}, {counts}")
            if not (self.outbox / f"{name}.zip").is_file():
                problems.append(f"session {name} has no ZIP")

        left = {
            "temp files (.tmp-*)": [p for p in root.rglob(".tmp-*")],
            "originals in state/originals": list((root / "state" / "originals").rglob("*")),
            "files in state/results": list((root / "state" / "results").rglob("*")),
            "files in the inbox": [p for p in self.inbox.rglob("*") if not p.is_dir()],
            "files in archive/ (keep_originals is false)": [p for p in (root / "archive").rglob("*") if not p.is_dir()],
            "markers in retry/ and cancel/": [
                p for d in ("retry", "cancel") for p in (root / d).rglob("*") if not p.is_dir()
            ],
        }
        for what, paths in left.items():
            if paths:
                problems.append(
                    f"left behind, {what}: {[str(p.relative_to(root)) for p in sorted(paths)[:12]]}"
                    f"{f' and {len(paths) - 12} more' if len(paths) > 12 else ''}"
                )

        if self.tally.json_reads == 0:
            problems.append("the status JSONs were never read")
        if self.tally.json_failures:
            problems.append(f"status JSON reads that failed: {self.tally.json_failures[:10]}")
        if self.tally.zip_failures:
            problems.append(f"ZIP reads that failed: {self.tally.zip_failures[:10]}")
        if self.unexpected:
            problems.append(f"item failures our kills do not explain: {self.unexpected[:10]}")
        if self.tally.daemon_kills < self.opts.kills:
            problems.append(f"only {self.tally.daemon_kills} daemon kills, not {self.opts.kills}")
        if self.tally.sigstops != 1:
            problems.append(f"{self.tally.sigstops} jobs SIGSTOPped, not 1")
        if self.tally.job_kills < 1:
            problems.append("no running job was ever killed")

        events, torn = log_events(self.daemon.log_path)
        errors = Counter(e["event"] for e in events if e.get("level") in ("error", "critical"))
        if errors:
            problems.append(
                f"error lines in the daemon's log: {dict(errors)}; first: "
                f"{next(e for e in events if e.get('level') in ('error', 'critical'))}"
            )
        self.log_digest = (
            f"log: {len(events)} events, {torn} torn lines, "
            f"leftover_job_killed={sum(e['event'] == 'leftover_job_killed' for e in events)}, "
            f"item_recovered={sum(e['event'] == 'item_recovered' for e in events)}, "
            f"take_completed={sum(e['event'] == 'take_completed' for e in events)}, "
            f"temp_files_removed={sum(e.get('count', 0) for e in events if e['event'] == 'temp_files_removed')}, "
            f"sessions closed {dict(Counter(e.get('reason') for e in events if e['event'] == 'session_closed'))}; "
            f"soak: {self.tally.waves} waves ({self.tally.waves_while_down} while down), "
            f"{self.tally.job_kill_misses} job kills missed, {self.tally.retries} retries, "
            f"failures {dict(self.tally.failures)}, {self.tally.zip_reads} ZIP reads, "
            f"this test's own CPU {sum(resource.getrusage(resource.RUSAGE_SELF)[:2]):.1f} s"
        )
        return problems


@pytest.mark.soak
@pytest.mark.timeout(300, func_only=True)  # replaced by the options fixture's, sized to the run
@pytest.mark.parametrize("job_slots", [1, 2, 3], ids=["1-slot", "2-slots", "3-slots"])
def test_crash_soak_loses_and_repeats_nothing(tmp_path, options, job_slots):
    soak = Soak(tmp_path, options, job_slots)
    try:
        soak.run()
    except BaseException as exc:
        soak.clean_up()
        print(f"\n{soak.tally.summary()}")
        raise AssertionError(f"{soak.tally.summary()}\nthe soak stopped: {exc}\nlog: {soak.daemon.log_path}") from exc
    soak.clean_up()
    problems = soak.final_problems()
    print(f"\n{soak.tally.summary()}\n{soak.log_digest}")
    assert not problems, "\n".join([soak.tally.summary(), *problems, soak.log_digest])
