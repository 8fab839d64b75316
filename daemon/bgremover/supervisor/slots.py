"""Job slots: how many jobs may run at once, with how many threads each, and which slot each job holds.

The design's backpressure is a bound on the work in flight, however long the
queue: at most `job_slots` jobs, each a fresh process with its own timeout and
memory cap. `choose()` is the rule, a function of figures only (so it is tested
on made-up machines); `resolve()` reads this machine's figures and gives the
settings the daemon runs with, the choice spelled out in one log line.

Why one thread per job under `auto`: a job is partly single-threaded (decode,
resizing the mask, the encoders' own work), and onnxruntime's intra-op threads
scale well under 2x from one thread to two on a 320x320 model. Two jobs of one
thread keep two cores busier than one job of two threads, which the bench's
`--slots` run measures (docs/several-jobs.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bgremover.settings import Settings, usable_cores

AUTO_THREADS_PER_JOB = 1  # see above: throughput per core is best with one intra-op thread
# What `auto` leaves to everything else on the machine (the supervisor, the page
# cache, a desktop): slots are counted in what is available beyond it.
AUTO_MEMORY_RESERVE_MB = 512
# Under a runner of other hosts, `auto` is the slots their workers report, and this many
# more: a task waiting in the broker for each worker that frees a slot, with no round trip.
WORKERS_SPARE = 1


@dataclass(frozen=True)
class SlotChoice:
    slots: int
    threads: int  # intra-op threads per job
    reason: str  # one sentence: why this many
    follows_workers: bool = False  # the count follows the workers' slots (auto under a runner of other hosts)


def choose(
    requested: int | str,
    cores: int,
    available_mb: int | None,
    job_memory_limit_mb: int,
    threads: int | None = None,
    elsewhere: bool = False,
) -> SlotChoice:
    """The slots and threads per job, from what was asked, the usable cores and the memory available.

    `threads` is the threads setting where one was given; otherwise each job
    gets its share of the cores (at least one). `elsewhere`: the jobs run on
    other hosts (the celery runner), whose workers, not this machine, say how
    many can run under `auto`.
    """
    cores = max(1, cores)
    if requested == "auto" and elsewhere:
        return SlotChoice(
            WORKERS_SPARE,
            threads or AUTO_THREADS_PER_JOB,
            f"job_slots = auto: the slots the workers report, plus {WORKERS_SPARE} waiting in the "
            "broker, followed as workers come and go",
            follows_workers=True,
        )
    if requested != "auto":
        slots = int(requested)
        per_job = threads or max(1, cores // slots)
        return SlotChoice(
            slots, per_job, f"job_slots = {slots}, {thread_words(per_job, threads, 'its share of the cores')}"
        )
    per_job = threads or AUTO_THREADS_PER_JOB
    by_cores = max(1, cores // per_job)
    by_memory = None if available_mb is None else max(1, (available_mb - AUTO_MEMORY_RESERVE_MB) // job_memory_limit_mb)
    slots = by_cores if by_memory is None else min(by_cores, by_memory)
    why = [f"{cores} usable core{plural(cores)} at {per_job} thread{plural(per_job)} a job allow {by_cores}"]
    if by_memory is None:
        why.append("the memory available could not be read")
    else:
        why.append(
            f"{available_mb} MB available, less {AUTO_MEMORY_RESERVE_MB} MB kept free, holds {by_memory} "
            f"job{plural(by_memory)} of {job_memory_limit_mb} MB (job_memory_limit_mb)"
        )
    words = thread_words(per_job, threads, "the most images per second")
    return SlotChoice(slots, per_job, f"job_slots = auto: {slots}, {words}; " + "; ".join(why))


def thread_words(per_job: int, threads: int | None, otherwise: str) -> str:
    """`2 threads a job (why)`: the threads setting's, or `otherwise`."""
    return f"{per_job} thread{plural(per_job)} a job ({'the threads setting' if threads else otherwise})"


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def oversubscribed(choice: SlotChoice, available_mb: int | None, job_memory_limit_mb: int) -> str | None:
    """A warning when the slots' memory caps together pass what this machine has available, else None."""
    needed = choice.slots * job_memory_limit_mb
    if available_mb is None or needed <= available_mb:
        return None
    return (
        f"{choice.slots} job slots of up to {job_memory_limit_mb} MB each may need {needed} MB, more than the "
        f"{available_mb} MB available: lower job_slots or job_memory_limit_mb, or the kernel may kill a job"
    )


def resolve(settings: Settings) -> tuple[Settings, SlotChoice, str | None]:
    """The settings the daemon runs with (job_slots a number, threads per job), why, and any warning."""
    available = available_memory_mb()
    elsewhere = settings.runner != "local"
    choice = choose(
        settings.job_slots,
        usable_cores(),
        available,
        settings.job_memory_limit_mb,
        settings.threads if settings.threads_given else None,
        elsewhere,
    )
    # This machine's memory bounds only the jobs it runs itself.
    warning = None if elsewhere else oversubscribed(choice, available, settings.job_memory_limit_mb)
    return settings.model_copy(update={"job_slots": choice.slots, "threads": choice.threads}), choice, warning


# -- this machine's memory -------------------------------------------------------------


def available_memory_mb(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What the kernel says is available (MemAvailable), less where this process's cgroup allows less; None if unknown."""
    figures = [
        mb
        for mb in (meminfo_available_mb(proc / "meminfo"), cgroup_room_mb(proc / "self/cgroup", cgroups))
        if mb is not None
    ]
    return min(figures) if figures else None


def meminfo_available_mb(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_room_mb(self_cgroup: Path, cgroups: Path) -> int | None:
    """A cgroup v2 memory.max less memory.current, for our own cgroup; None where there is no limit."""
    try:
        line = next(line for line in self_cgroup.read_text().splitlines() if line.startswith("0::"))
        folder = cgroups / line[3:].lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((folder / "memory.current").read_text())
        return max(0, int(limit) - used) // (1024 * 1024)
    except (OSError, ValueError, StopIteration):
        return None


# -- which slot each job holds -------------------------------------------------------


class Slots:
    """The slots in use and how long each was busy: the status line's and the metrics' figures."""

    def __init__(self, count: int, now: float) -> None:
        self.count = count
        self.since = now
        self.busy_since: dict[int, float] = {}  # slot -> when its job started
        self.busy_seconds = [0.0] * count

    @property
    def in_use(self) -> int:
        return len(self.busy_since)

    def take(self, now: float) -> int | None:
        """The lowest free slot, now busy; None when all are."""
        slot = next((slot for slot in range(self.count) if slot not in self.busy_since), None)
        if slot is not None:
            self.busy_since[slot] = now
        return slot

    def resize(self, count: int) -> None:
        """Now `count` slots. Jobs in slots past a smaller count run on; their slots are not taken again."""
        self.busy_seconds += [0.0] * (count - len(self.busy_seconds))
        self.count = count

    def release(self, slot: int, now: float) -> None:
        started = self.busy_since.pop(slot, None)
        if started is not None:
            self.busy_seconds[slot] += now - started

    def busy_ratios(self, now: float) -> list[float]:
        """Each slot's share of the time since start-up spent running a job, from 0 to 1."""
        elapsed = now - self.since
        if elapsed <= 0:
            return [0.0] * self.count
        return [
            min(1.0, (self.busy_seconds[slot] + now - self.busy_since.get(slot, now)) / elapsed)
            for slot in range(self.count)
        ]
