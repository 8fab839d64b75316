"""job_slots: the rule that chooses how many jobs run at once, on made-up machines, and a bad value refused at start."""

from __future__ import annotations

import pytest

from bgremover.settings import load_settings
from bgremover.supervisor import slots
from bgremover.supervisor.slots import AUTO_MEMORY_RESERVE_MB, Slots, choose, oversubscribed

LIMIT_MB = 3072  # job_memory_limit_mb's default


# ---------------------------------------------------------------- the auto rule


@pytest.mark.parametrize(
    ("cores", "available_mb", "expected"),
    [
        (1, 16000, 1),  # one core: one job
        (2, 24000, 2),  # this project's CI machine: one thread a job, a job a core
        (16, 64000, 16),  # a studio box with memory to spare: every core a job
        (32, 16000, 5),  # 32 cores, 16 GB: memory for (16000 - 512) // 3072 = 5 jobs
        (8, 2000, 1),  # too little memory for even one job's cap: still one, never zero
        (4, None, 4),  # memory unknown: the cores alone decide
    ],
)
def test_auto_takes_one_job_a_core_within_the_memory_the_caps_need(cores, available_mb, expected):
    choice = choose("auto", cores, available_mb, LIMIT_MB)
    assert choice.slots == expected
    assert choice.threads == 1
    assert choice.reason.startswith(f"job_slots = auto: {expected},")
    assert "\n" not in choice.reason


def test_auto_says_why_in_one_line_naming_the_cores_and_the_memory():
    choice = choose("auto", 32, 16000, LIMIT_MB)
    assert choice.reason == (
        "job_slots = auto: 5, 1 thread a job (the most images per second); 32 usable cores at 1 thread a job allow 32; "
        f"16000 MB available, less {AUTO_MEMORY_RESERVE_MB} MB kept free, holds 5 jobs of 3072 MB (job_memory_limit_mb)"
    )


def test_with_threads_set_auto_counts_cores_in_jobs_of_that_many_threads():
    choice = choose("auto", 16, 64000, LIMIT_MB, threads=4)
    assert (choice.slots, choice.threads) == (4, 4)
    assert "4 threads a job (the threads setting)" in choice.reason


@pytest.mark.parametrize(
    ("requested", "cores", "threads", "expected"),
    [
        (1, 2, None, (1, 2)),  # one job gets every core, as before job_slots
        (2, 2, None, (2, 1)),
        (3, 2, None, (3, 1)),  # more slots than cores: at least one thread each
        (4, 16, None, (4, 4)),
        (2, 16, 3, (2, 3)),  # threads set: it wins
    ],
)
def test_a_number_of_slots_is_kept_and_threads_follow_unless_set(requested, cores, threads, expected):
    choice = choose(requested, cores, 1000, LIMIT_MB, threads)
    assert (choice.slots, choice.threads) == expected


def test_slots_whose_caps_pass_the_memory_available_are_warned_about():
    assert oversubscribed(choose(4, 8, 8000, LIMIT_MB), 8000, LIMIT_MB) == (
        "4 job slots of up to 3072 MB each may need 12288 MB, more than the 8000 MB available: lower job_slots or "
        "job_memory_limit_mb, or the kernel may kill a job"
    )
    assert oversubscribed(choose(2, 8, 8000, LIMIT_MB), 8000, LIMIT_MB) is None
    assert oversubscribed(choose(2, 8, None, LIMIT_MB), None, LIMIT_MB) is None


def test_resolve_gives_the_daemon_a_number_and_threads_per_job(monkeypatch, tmp_path):
    monkeypatch.setattr(slots, "usable_cores", lambda: 6)
    monkeypatch.setattr(slots, "available_memory_mb", lambda: 7000)
    resolved, choice, warning = slots.resolve(load_settings(None, root=tmp_path, job_slots="auto"))
    assert (resolved.job_slots, resolved.threads) == (2, 1) == (choice.slots, choice.threads)
    assert warning is None
    resolved, _, warning = slots.resolve(load_settings(None, root=tmp_path, job_slots=3))
    assert (resolved.job_slots, resolved.threads) == (3, 2)
    assert "3 job slots of up to 3072 MB each may need 9216 MB" in warning
    resolved, _, _ = slots.resolve(load_settings(None, root=tmp_path, job_slots=3, threads=4))
    assert (resolved.job_slots, resolved.threads) == (3, 4)


def test_auto_under_a_runner_of_other_hosts_follows_the_workers_not_this_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(slots, "usable_cores", lambda: 2)
    monkeypatch.setattr(slots, "available_memory_mb", lambda: 1000)  # too little here for even one cap
    resolved, choice, warning = slots.resolve(
        load_settings(None, root=tmp_path, job_slots="auto", runner="celery", broker_url="redis://127.0.0.1:1/0")
    )
    assert choice.follows_workers and resolved.job_slots == slots.WORKERS_SPARE
    assert choice.reason == (
        "job_slots = auto: the slots the workers report, plus 1 waiting in the broker, followed as workers come and go"
    )
    assert warning is None, "this machine's memory bounds only the jobs it runs itself"
    fixed, choice, _ = slots.resolve(
        load_settings(None, root=tmp_path, job_slots=5, runner="celery", broker_url="redis://127.0.0.1:1/0")
    )
    assert (fixed.job_slots, choice.follows_workers) == (5, False)
    assert choose("auto", 2, 24000, LIMIT_MB).follows_workers is False


def test_slots_resized_keep_their_jobs_and_take_only_slots_within_the_new_count():
    used = Slots(3, now=0.0)
    assert [used.take(0.0), used.take(0.0), used.take(0.0)] == [0, 1, 2]
    used.resize(2)
    used.release(0, 1.0)
    assert used.in_use == 2 and used.take(1.0) == 0 and used.take(1.0) is None  # slot 2 runs on, not retaken
    used.release(2, 2.0)
    used.resize(4)
    assert [used.take(2.0), used.take(2.0), used.take(2.0)] == [2, 3, None]
    assert len(used.busy_ratios(4.0)) == 4


# ---------------------------------------------------------------- this machine's memory


def test_memory_available_is_the_kernels_figure_bounded_by_the_cgroups(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       24000000 kB\nMemAvailable:   20480000 kB\n")
    (proc / "self" / "cgroup").write_text("0::/system.slice/bgremover.service\n")
    assert slots.available_memory_mb(proc, cgroups) == 20000  # no cgroup files: the kernel's figure alone
    unit = cgroups / "system.slice" / "bgremover.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text("max\n")
    (unit / "memory.current").write_text(str(100 * 2**20))
    assert slots.available_memory_mb(proc, cgroups) == 20000  # no limit
    (unit / "memory.max").write_text(str(4096 * 2**20))
    assert slots.available_memory_mb(proc, cgroups) == 3996  # MemoryMax=4G, 100 MB in use
    assert slots.available_memory_mb(tmp_path / "nowhere", tmp_path / "nowhere") is None


# ---------------------------------------------------------------- which slot each job holds


def test_slots_are_taken_lowest_first_and_their_busy_time_is_kept():
    used = Slots(3, now=0.0)
    assert [used.take(0.0), used.take(1.0), used.take(2.0), used.take(2.0)] == [0, 1, 2, None]
    used.release(1, 5.0)
    assert used.in_use == 2 and used.take(6.0) == 1  # the freed slot is the next one taken
    used.release(0, 10.0)
    assert used.busy_ratios(10.0) == [1.0, (4.0 + 4.0) / 10, 0.8]


# ---------------------------------------------------------------- refused at start-up
