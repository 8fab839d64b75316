"""What the supervisor and the workers tell each other beside the tasks, as Redis keys.

- a cancel mark per task: the worker polls it while the job runs, and stops the
  job's process group when it appears (Celery's revoke with terminate must not
  be used: it signals whatever the pool process runs by then);
- a concluded mark per task: the supervisor has recorded the outcome, so a
  duplicate delivery of the same task is refused before it runs;
- a fence per task concluded without its answer (its worker lost, or silent),
  naming the files its job would write: an answer may still come, and the
  supervisor, restarted or not, refuses it and sweeps those files;
- a hand-back per task a worker gave back unrun, or whose job failed for the
  worker's own reason: the same attempt waits for another worker, and the
  supervisor does not take the lapsed lease for a lost worker;
- the root's identity, so a worker pointed at another root is refused, and the
  supervisor's version and model, which a worker must match before it takes work;
- each worker's heartbeat, with its slots, version and what keeps it from
  taking work (if anything), for `bgremover status` and the `auto` job slots.

Every key is under PREFIX, Celery's and kombu's too (app.py sets it as their
global key prefix), and the database is bgremover's alone: a start refuses one
that holds any other key (`foreign_keys`), since another app's Celery shares
kombu's key names and the two would clear and redeliver each other's tasks.
"""

from __future__ import annotations

import json
import time

import redis

PREFIX = "bgremover:"
QUEUE = "jobs"  # the Celery queue of the tasks; its list in Redis is PREFIX + QUEUE
QUEUE_KEY = f"{PREFIX}{QUEUE}"


def model_queue(model: str) -> str:
    """The queue of the tasks of a model only a ticket asks for: read only by the workers that have it."""
    return f"{QUEUE}.model.{model}"


UNACKED_KEYS = (f"{PREFIX}unacked", f"{PREFIX}unacked_index")  # kombu's delivered, not yet acknowledged messages
ANSWER_PREFIX = f"{PREFIX}celery-task-meta-"  # Celery's stored answers, one key a task
HANDED_BACK_KEY = f"{PREFIX}handed-back"  # a hash: worker -> how many tasks it handed back
MARK_SECONDS = 7 * 24 * 3600  # as long as Celery keeps a result
HEARTBEAT_SECONDS = 30  # a worker not heard of for this long is no longer listed
SHOWN_FOREIGN_KEYS = 3  # named in the refusal of a database another app uses
SCAN_STEP = 20_000  # keys a call of FOREIGN_KEYS_SCRIPT looks at: each holds Redis for some 0.1 s at most
# One step of SCAN inside Redis: the next cursor, how many keys lack the prefix, and up to 100 of them.
FOREIGN_KEYS_SCRIPT = """
local reply = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local prefix, found, sample = ARGV[3], 0, {}
for _, key in ipairs(reply[2]) do
  if string.sub(key, 1, #prefix) ~= prefix then
    found = found + 1
    if #sample < 100 then sample[#sample + 1] = key end
  end
end
return {reply[1], found, sample}
"""


def shared_database(count: int, names: list[str], shown_url: str) -> str | None:
    """The one line that refuses a broker database holding keys not bgremover's; None for one of its own."""
    if not count:
        return None
    listed = ", ".join([*names, "..."] if count > len(names) else names)
    return (
        f"the broker's database {shown_url} holds {count} key{'' if count == 1 else 's'} that are not bgremover's "
        f"({listed}): another application uses it. Give bgremover a Redis database of its own "
        "(another number at the end of broker_url)"
    )


class Marks:
    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url, socket_connect_timeout=3.0, socket_timeout=5.0)

    def ping(self) -> None:
        self.client.ping()

    def run_id(self) -> str:
        """The Redis server's run id: a new one at each restart, when a server without persistence starts empty."""
        return str(self.client.info("server").get("run_id", ""))

    def cancel(self, task: str) -> None:
        self.client.set(f"{PREFIX}cancel:{task}", "1", ex=MARK_SECONDS)

    def cancelled(self, task: str) -> bool:
        return bool(self.client.exists(f"{PREFIX}cancel:{task}"))

    def conclude(self, task: str) -> None:
        self.client.set(f"{PREFIX}concluded:{task}", "1", ex=MARK_SECONDS)

    def concluded(self, task: str) -> bool:
        return bool(self.client.exists(f"{PREFIX}concluded:{task}"))

    def fence(self, task: str, files: list[str], seconds: float) -> None:
        self.client.set(f"{PREFIX}fenced:{task}", json.dumps(files), ex=max(1, round(seconds)))

    def unfence(self, task: str) -> None:
        self.client.delete(f"{PREFIX}fenced:{task}")

    def fences(self) -> dict[str, tuple[list[str], int]]:
        """Every fenced task: its files (relative to the root) and the seconds its fence has left."""
        found = {}
        for key in self.client.scan_iter(f"{PREFIX}fenced:*"):
            value, left = self.client.get(key), self.client.ttl(key)
            if value and left > 0:
                found[key.decode().removeprefix(f"{PREFIX}fenced:")] = (json.loads(value), left)
        return found

    def hand_back(self, task: str, worker: str, reason: str) -> None:
        """`task` given back to the broker unrun by `worker`: the mark first, then the lease, so the
        supervisor never sees the lease gone without the mark."""
        self.client.set(f"{PREFIX}handback:{task}", json.dumps({"worker": worker, "reason": reason}), ex=MARK_SECONDS)
        self.client.delete(f"{PREFIX}lease:{task}")
        # Counted here, by the worker: the supervisor looks at a lease only every few seconds, and would miss most.
        self.client.hincrby(HANDED_BACK_KEY, worker, 1)

    def handed_back_counts(self) -> dict[str, int]:
        """How many tasks each worker has handed back, ever (for the per-worker failure counts)."""
        return {
            name.decode(errors="replace"): int(count) for name, count in self.client.hgetall(HANDED_BACK_KEY).items()
        }

    def handed_back(self, task: str) -> dict | None:
        value = self.client.get(f"{PREFIX}handback:{task}")
        return json.loads(value) if value else None

    def taken_over(self, task: str) -> None:
        """A worker took up a handed-back task: its next lapsed lease means a lost worker again."""
        self.client.delete(f"{PREFIX}handback:{task}")

    def lease_holder(self, task: str) -> str | None:
        """The worker that runs the task now (it renews the lease while the job runs); None if none does."""
        value = self.client.get(f"{PREFIX}lease:{task}")
        return value.decode(errors="replace") if value else None

    def in_transit(self, task: str, queue: str = QUEUE) -> bool:
        """Whether the broker still holds the task: waiting in its queue, delivered and not yet acknowledged, or running.

        A task it no longer holds was lost with the broker's memory (a restart
        without persistence): the supervisor sends it again under the same id.
        """
        quoted = f'"{task}"'.encode()
        if self.client.exists(f"{PREFIX}lease:{task}") or self.client.exists(f"{ANSWER_PREFIX}{task}"):
            return True
        waiting = self.client.lrange(f"{PREFIX}{queue}", 0, -1)
        delivered = self.client.hvals(UNACKED_KEYS[0])
        return any(quoted in message for message in [*waiting, *delivered])

    def claim_root(self, identity: str) -> bool:
        """The supervisor's root, for the workers to compare theirs with; True if it replaced another root's.

        Task ids are the item's id and attempt, which a new root (its state
        removed, or another folder) numbers from 1 again. So when the root
        changes, what the broker held for the old one goes first: its marks
        (a concluded mark would refuse the new root's task of the same id),
        its answers, and its tasks still waiting (their spool names would
        point into the new root). One broker database serves one supervisor,
        and holds nothing else (`foreign_keys`).
        """
        previous = self.root()
        replaced = previous is not None and previous != identity
        if replaced:
            stale = [
                key
                for pattern in (
                    f"{PREFIX}concluded:*",
                    f"{PREFIX}cancel:*",
                    f"{PREFIX}lease:*",
                    f"{PREFIX}fenced:*",
                    f"{PREFIX}handback:*",
                    f"{ANSWER_PREFIX}bgremover-*",
                    f"{PREFIX}{model_queue('*')}",
                )
                for key in self.client.scan_iter(pattern)
            ]
            self.client.delete(QUEUE_KEY, *UNACKED_KEYS, *stale)
        self.client.set(f"{PREFIX}root", identity)
        return replaced

    def foreign_keys(self) -> tuple[int, list[str]]:
        """How many keys of the database are not bgremover's, and the first few of them by name.

        Read once at start, by the supervisor and by each worker. A dedicated
        database holds a few keys an image for as long as the answers are kept,
        so the whole keyspace is looked at inside Redis (FOREIGN_KEYS_SCRIPT),
        a step of SCAN_STEP keys a call: only the foreign keys cross the wire,
        and no call holds Redis for long (about 5 s a million keys in all,
        measured on a busy 2-core machine).
        """
        count, names, cursor = 0, [], 0
        while True:
            cursor, found, sample = self.client.eval(FOREIGN_KEYS_SCRIPT, 0, cursor, SCAN_STEP, PREFIX)
            count += found
            names = sorted({*names, *(name.decode(errors="replace") for name in sample)})
            if int(cursor) == 0:
                return count, names[:SHOWN_FOREIGN_KEYS]

    def root(self) -> str | None:
        value = self.client.get(f"{PREFIX}root")
        return value.decode() if value else None

    def publish_supervisor(self, facts: dict) -> None:
        """What a worker must match before it takes work: {"version", "model", "sha256"}."""
        self.client.set(f"{PREFIX}supervisor", json.dumps(facts))

    def supervisor(self) -> dict | None:
        value = self.client.get(f"{PREFIX}supervisor")
        return json.loads(value) if value else None

    def heartbeat(self, worker: str, slots: int, version: str, problem: str | None, models: list[str]) -> None:
        """`problem`: why the worker takes no work now (None: it does); its slots then count for nothing.
        `models`: the models it has, whose queues it reads (beside the supervisor's model, which all have)."""
        facts = {"slots": slots, "seen": time.time(), "version": version, "problem": problem, "models": models}
        self.client.set(f"{PREFIX}worker:{worker}", json.dumps(facts), ex=HEARTBEAT_SECONDS)

    def gone(self, worker: str) -> None:
        """A worker that stops says so: the supervisor sends it nothing more at once, not a heartbeat later."""
        self.client.delete(f"{PREFIX}worker:{worker}")

    def workers(self) -> dict[str, dict]:
        """The workers heard of recently: name -> {"slots", "seen", "version", "problem"}."""
        found = {}
        for key in self.client.scan_iter(f"{PREFIX}worker:*"):
            value = self.client.get(key)
            if value:
                found[key.decode().removeprefix(f"{PREFIX}worker:")] = json.loads(value)
        return found
