"""The celery runner: a real redis-server, the real supervisor and real `bgremover worker` processes on one root.

A local folder stands in for the root that worker hosts would mount over NFS.
The fake job bodies (tests/support/fakejob.py) keep every job short.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from bgremover.runners.celery.app import TASK_NAME, make_app
from bgremover.runners.celery.marks import QUEUE_KEY, UNACKED_KEYS
from bgremover.settings import load_settings
from tests.conftest import REPO
from tests.support.cluster import (
    Redis,
    Worker,
    celery_daemon,
    freeze,
    kill_host,
    run_bgremover,
    thaw,
    worker_events,
)
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def broker(tmp_path):
    with Redis(tmp_path / "redis") as server:
        yield server


def test_a_session_is_done_through_two_workers_and_each_item_names_its_worker(tmp_path, broker):
    root = tmp_path / "root"
    with (
        celery_daemon(root, broker.url, job_slots=2) as daemon,
        Worker(root, broker.url, "w1"),
        Worker(root, broker.url, "w2"),
    ):
        names = [f"p{n}.jpg" for n in range(6)]
        for name in names:
            drop(root / "inbox", f"shoot/{name}", "sleep 0.3")
        drop(root / "inbox", "shoot/broken.jpg", "exit 2")
        status = daemon.wait_complete("shoot", timeout=120)
        members = daemon.zip_members("shoot")
    items = {item["name"]: item for item in status["items"]}
    assert {name: items[name]["status"] for name in names} == dict.fromkeys(names, "done")
    assert items["broken.jpg"]["status"] == "failed"
    assert items["broken.jpg"]["error"] == "the file could not be read as an image"
    assert sorted(members) == sorted(name.replace(".jpg", ".png") for name in names)
    assert {items[name]["worker"].split("@")[0] for name in names} <= {"w1", "w2"}
    assert all(items[name]["attempts"] == 1 for name in names)


def busy(root, worker: Worker, gate) -> None:
    """The worker's one slot held by a job that waits for `gate`: what is sent next waits in the broker's queue."""
    drop(root / "inbox", "busy/held.jpg", f"gate {gate}")
    wait_for(lambda: worker_events(worker, "task_started"), timeout=60, what="the worker's slot taken")


def test_the_message_carries_ids_and_spool_names_never_the_users_file_name(tmp_path, broker):
    root, gate = tmp_path / "root", tmp_path / "gate"
    client = broker.client()
    with celery_daemon(root, broker.url, job_slots=2) as daemon, Worker(root, broker.url, "w1") as worker:
        busy(root, worker, gate)
        drop(root / "inbox", "secret shoot/Client Name — private.jpg", "ok")  # the worker is busy: the task waits
        wait_for(lambda: client.llen(QUEUE_KEY), what="the task on the broker's queue")
        envelope = json.loads(client.lindex(QUEUE_KEY, 0))
        assert envelope["headers"]["id"] == "bgremover-2-1"  # the item's id and attempt
        body = base64.b64decode(envelope["body"]).decode()
        assert "Client Name" not in body and "secret shoot" not in body
        (message,), _, _ = json.loads(body)
        assert (message["item"], message["attempt"], message["spec"]["input"]) == (2, 1, "state/originals/2.jpg")
        gate.touch()
        status = daemon.wait_complete("secret shoot", timeout=120)
    assert status["items"][0]["status"] == "done"


def test_a_duplicate_delivery_is_refused_and_changes_nothing(tmp_path, broker):
    root = tmp_path / "root"
    with celery_daemon(root, broker.url, job_slots=1) as daemon, Worker(root, broker.url, "w1") as worker:
        drop(root / "inbox", "once/a.jpg", "ok")
        daemon.wait_complete("once", timeout=120)
        # The same task delivered again, as Redis does past its visibility timeout.
        app = make_app(load_settings(root=root, broker_url=broker.url))
        sent = daemon.events("job_started")[0]
        assert sent["task_id"] == "bgremover-1-1"
        app.send_task(TASK_NAME, args=[{"item": 1, "attempt": 1, "spec": {}, "limits": {}}], task_id="bgremover-1-1")
        refused = wait_for(lambda: worker_events(worker, "task_refused"), what="the duplicate refused")
        app.close()
        assert refused[0]["task"] == "bgremover-1-1"
        assert refused[0]["reason"] == "its outcome is recorded already"
        assert len(worker_events(worker, "task_started")) == 1
        assert daemon.status("once")["items"][0]["status"] == "done"
        assert len(daemon.events("job_finished")) == 1


def test_cancel_stops_the_job_on_its_worker_at_once(tmp_path, broker):
    root = tmp_path / "root"
    with celery_daemon(root, broker.url, job_slots=1) as daemon, Worker(root, broker.url, "w1") as worker:
        drop(root / "inbox", "long/a.jpg", "sleep 60")
        drop(root / "inbox", "long/b.jpg", "sleep 60")
        wait_for(lambda: worker_events(worker, "task_started"), what="the job running on the worker")
        (root / "cancel" / "long").touch()
        status = daemon.wait_complete("long", timeout=60)
        finished = wait_for(lambda: worker_events(worker, "task_finished"), what="the worker's answer")
    assert [item["status"] for item in status["items"]] == ["cancelled", "cancelled"]
    assert finished[0]["stop_reason"] == "cancel"


def test_runner_celery_without_a_broker_is_refused_in_one_line(tmp_path):
    done = run_bgremover(tmp_path, "run", runner="celery")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        'bgremover: runner = "celery" needs broker_url (BGREMOVER_BROKER_URL) or broker_url_file, say redis://host:6379/0'
    ]


def test_an_unreachable_broker_stops_start_up_in_one_line(tmp_path):
    from tests.support.cluster import free_port

    done = run_bgremover(tmp_path, "run", runner="celery", broker_url=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgremover: cannot start: cannot reach the broker at redis://"), (
        lines
    )


def test_a_worker_on_a_root_that_is_not_the_supervisors_is_refused_in_one_line(tmp_path, broker):
    root = tmp_path / "root"
    with celery_daemon(root, broker.url, job_slots=1):
        done = run_bgremover(tmp_path / "elsewhere", "worker", "--broker", broker.url)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not the supervisor's root" in lines[0], lines


def test_a_worker_killed_mid_job_costs_an_attempt_and_the_item_is_done_once(tmp_path, broker):
    root = tmp_path / "root"
    with celery_daemon(root, broker.url, job_slots=1) as daemon, Worker(root, broker.url, "w1") as doomed:
        drop(root / "inbox", "lost/a.jpg", "sleep 5")
        wait_for(lambda: worker_events(doomed, "task_started"), what="the job running on w1")
        kill_host(doomed)
        doomed.stop()
        with Worker(root, broker.url, "w2"):
            status = daemon.wait_complete("lost", timeout=120)
        lost = daemon.events("worker_lost")
        members = daemon.zip_members("lost")
    item = status["items"][0]
    assert (item["status"], item["attempts"], item["worker"].split("@")[0]) == ("done", 2, "w2")
    assert lost and lost[0]["task"] == "bgremover-1-1"
    assert list(members) == ["a.png"]


def test_redis_restarted_mid_run_costs_time_never_items(tmp_path, broker):
    root = tmp_path / "root"
    names = [f"p{n}.jpg" for n in range(6)]
    with (
        celery_daemon(root, broker.url, job_slots=2) as daemon,
        Worker(root, broker.url, "w1") as first,
        Worker(root, broker.url, "w2") as second,
    ):
        for name in names:
            drop(root / "inbox", f"shoot/{name}", "sleep 1")
        wait_for(
            lambda: worker_events(first, "task_started") or worker_events(second, "task_started"), what="a job running"
        )
        broker.stop()  # persistence off: everything it held is gone
        wait_for(lambda: daemon.events("broker_unreachable"), what="the supervisor to notice")
        broker.start()
        status = daemon.wait_complete("shoot", timeout=180)
        members = daemon.zip_members("shoot")
        failed_ever = [event for event in daemon.events("job_finished") if event["status"] == "failed"]
        resent = daemon.events("task_resent")
    assert resent, "no task was in flight when the broker restarted"
    assert [item["status"] for item in status["items"]] == ["done"] * len(names)
    assert sorted(members) == sorted(name.replace(".jpg", ".png") for name in names)
    assert failed_ever == []


def test_a_supervisor_killed_mid_run_finishes_every_item_exactly_once(tmp_path, broker):
    root = tmp_path / "root"
    names = [f"p{n}.jpg" for n in range(6)]
    daemon = celery_daemon(root, broker.url, job_slots=2)
    with daemon, Worker(root, broker.url, "w1") as first, Worker(root, broker.url, "w2"):
        for name in names:
            drop(root / "inbox", f"shoot/{name}", "sleep 1")
        wait_for(lambda: worker_events(first, "task_started"), what="a job running")
        daemon.kill()
        daemon.start()
        status = daemon.wait_complete("shoot", timeout=180)
        members = daemon.zip_members("shoot")
        done_events = [event for event in daemon.events("job_finished") if event["status"] == "done"]
    assert [item["status"] for item in status["items"]] == ["done"] * len(names)
    assert sorted(members) == sorted(name.replace(".jpg", ".png") for name in names)
    assert len({event["item"] for event in done_events}) == len(done_events) == len(names)


def test_a_restarted_supervisor_concludes_from_answers_given_while_it_was_down(tmp_path, broker):
    """Killed while two jobs run on a worker, which answers before the supervisor is back: both are
    concluded from those answers, under their first attempt, and nothing runs a second time."""
    root = tmp_path / "root"
    daemon = celery_daemon(root, broker.url, job_slots=2)
    with daemon, Worker(root, broker.url, "w1", slots=2) as worker:
        drop(root / "inbox", "shoot/a.jpg", "sleep 2")
        drop(root / "inbox", "shoot/b.jpg", "sleep 2")
        wait_for(lambda: len(worker_events(worker, "task_started")) == 2, what="both jobs running on w1")
        daemon.kill()
        wait_for(lambda: len(worker_events(worker, "task_finished")) == 2, what="both answers given meanwhile")
        daemon.start()
        status = daemon.wait_complete("shoot", timeout=120)
        adopted = daemon.events("job_adopted")
        members = daemon.zip_members("shoot")
        started = worker_events(worker, "task_started")
    assert sorted(event["task_id"] for event in adopted) == ["bgremover-1-1", "bgremover-2-1"]
    assert [(item["status"], item["attempts"]) for item in status["items"]] == [("done", 1), ("done", 1)]
    assert sorted(members) == ["a.png", "b.png"]
    assert sorted(event["task"] for event in started) == ["bgremover-1-1", "bgremover-2-1"], "a job ran twice"


def test_a_restarted_supervisor_sends_a_task_the_broker_lost_again_under_the_same_id(tmp_path, broker):
    """Killed with a task waiting for a worker, and the broker then loses it (a restart without
    persistence): the restarted supervisor sends it again as the same attempt, and it runs once."""
    root, gate = tmp_path / "root", tmp_path / "gate"
    client = broker.client()
    daemon = celery_daemon(root, broker.url, job_slots=2)
    with daemon, Worker(root, broker.url, "w1") as worker:
        busy(root, worker, gate)
        drop(root / "inbox", "wait/a.jpg", "ok")
        wait_for(lambda: client.llen(QUEUE_KEY), what="the task on the broker's queue")
        daemon.kill()
        client.delete(QUEUE_KEY)  # what a broker restarted without its data holds of it: nothing
        daemon.start()
        resent = wait_for(lambda: daemon.events("task_resent"), timeout=60, what="the task sent again")
        gate.touch()
        status = daemon.wait_complete("wait", timeout=120)
        started = worker_events(worker, "task_started")
    assert resent[0]["task"] == "bgremover-2-1"
    assert (status["items"][0]["status"], status["items"][0]["attempts"]) == ("done", 1)
    assert [event["task"] for event in started] == ["bgremover-1-1", "bgremover-2-1"]


def test_a_second_delivery_of_a_running_task_is_refused_by_the_other_worker(tmp_path, broker):
    root = tmp_path / "root"
    client = broker.client()
    with celery_daemon(root, broker.url, job_slots=1) as daemon:
        with Worker(root, broker.url, "w1") as first:
            drop(root / "inbox", "twice/a.jpg", "sleep 4")
            wait_for(lambda: worker_events(first, "task_started"), what="the job running on w1")
            # Its message as kombu keeps it while unacknowledged: [envelope, exchange, routing key].
            (delivered,) = client.hvals(UNACKED_KEYS[0])
            envelope = json.dumps(json.loads(delivered)[0])
            client.lpush(QUEUE_KEY, envelope)  # delivered again, as Redis does past the visibility timeout
            with Worker(root, broker.url, "w2") as second:
                refused = wait_for(lambda: worker_events(second, "task_refused"), what="w2 to refuse it")
                status = daemon.wait_complete("twice", timeout=120)
            ran = worker_events(first, "task_finished")
    assert refused[0]["task"] == "bgremover-1-1"
    assert refused[0]["reason"].startswith("a duplicate delivery: w1@")
    assert worker_events(second, "task_started") == []
    assert [(event["task"], event["returncode"]) for event in ran] == [("bgremover-1-1", 0)]
    assert (status["items"][0]["status"], status["items"][0]["attempts"]) == ("done", 1)
    assert len(daemon.events("job_finished")) == 1


def test_the_local_runner_imports_nothing_of_celery(tmp_path):
    probe = (
        "import sys; from bgremover import main; from bgremover.cli import commands; from bgremover.supervisor import loop; "
        "from bgremover.runners import runner_class; runner_class('local'); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('celery', 'kombu', 'redis') "
        "or name.startswith('bgremover.runners.celery')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_status_lists_the_workers_heard_of_recently_and_their_slots(tmp_path, broker):
    root = tmp_path / "root"
    with (
        celery_daemon(root, broker.url, job_slots=3),
        Worker(root, broker.url, "w1", slots=2),
        Worker(root, broker.url, "w2"),
    ):
        seen = wait_for(
            lambda: (
                (done := run_bgremover(tmp_path, "status", "--json", runner="celery", broker_url=broker.url))
                and len(json.loads(done.stdout)["workers"]) == 2
                and json.loads(done.stdout)
            ),
            what="workers",
        )
        text = run_bgremover(tmp_path, "status", runner="celery", broker_url=broker.url).stdout
    assert [(worker["name"].split("@")[0], worker["slots"]) for worker in seen["workers"]] == [("w1", 2), ("w2", 1)]
    assert seen["workers_error"] is None
    assert text.splitlines()[1].startswith("workers: 2, 3 slots: w1@")


def test_auto_slots_follow_the_workers_slots_plus_one_waiting_in_the_broker(tmp_path, broker):
    root = tmp_path / "root"
    with celery_daemon(root, broker.url, job_slots="auto") as daemon, Worker(root, broker.url, "w1", slots=2):
        changed = wait_for(lambda: daemon.events("job_slots_changed"), what="the slots following w1's")
        assert (changed[0]["slots"], changed[0]["workers_slots"]) == (3, 2)
        for n in range(8):
            drop(root / "inbox", f"many/{n}.jpg", "sleep 1")
        with Worker(root, broker.url, "w2"):
            grown = wait_for(
                lambda: [e for e in daemon.events("job_slots_changed") if e["slots"] == 4],
                what="the slots following w2's too",
            )
            status = daemon.wait_complete("many", timeout=120)
            said = run_bgremover(tmp_path, "status", "--json", runner="celery", broker_url=broker.url)
        started = daemon.events("job_started")
    assert grown[0]["workers_slots"] == 3
    assert max(event["jobs_running"] for event in started) <= 4
    assert any(event["jobs_running"] == 3 for event in started), "the spare was never used"
    assert [item["status"] for item in status["items"]] == ["done"] * 8
    assert json.loads(said.stdout)["daemon"]["job_slots"] == 4


def small_photos(count: int) -> list[tuple[str, bytes]]:
    """`count` small JPEG photos, cut from the bench's three at several sizes and crops."""
    import io

    from PIL import Image

    from tests.conftest import PHOTOS

    photos = []
    for n in range(count):
        source = Image.open(PHOTOS / ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")[n % 3]).convert("RGB")
        side = 160 + 16 * n
        box = (n * 3 % 40, n * 5 % 40, n * 3 % 40 + side, n * 5 % 40 + side)
        out = io.BytesIO()
        source.crop(box).save(out, "JPEG", quality=90)
        photos.append((f"photo{n:02}.jpg", out.getvalue()))
    return photos


def test_the_real_model_on_two_workers_gives_the_local_runners_cutouts_byte_for_byte(tmp_path, broker):
    from tests.support.harness import Daemon

    photos = small_photos(6)  # two workers, three each: enough to compare every cutout with the local one
    local_root, cluster_root = tmp_path / "local", tmp_path / "root"
    with Daemon(local_root, fake_jobs=False, job_slots=1) as daemon:
        for name, data in photos:
            drop(local_root / "inbox", f"set/{name}", data)
        daemon.wait_complete("set", timeout=200)
        local = daemon.zip_members("set")
    with (
        celery_daemon(cluster_root, broker.url, fake_jobs=False, job_slots=2) as daemon,
        Worker(cluster_root, broker.url, "w1", fake_jobs=False, providers="CPUExecutionProvider") as first,
        Worker(cluster_root, broker.url, "w2", fake_jobs=False),
    ):
        for name, data in photos:
            drop(cluster_root / "inbox", f"set/{name}", data)
        status = daemon.wait_complete("set", timeout=200)
        cluster = daemon.zip_members("set")
        ready = worker_events(first, "worker_ready")
    assert ready[0]["providers"] == ["CPUExecutionProvider"]
    assert [item["status"] for item in status["items"]] == ["done"] * len(photos)
    assert sorted(cluster) == sorted(local) == sorted(name.replace(".jpg", ".png") for name, _ in photos)
    assert all(cluster[member] == local[member] for member in local), "the same cutouts, byte for byte"


def test_a_worker_stopped_past_the_visibility_timeout_gets_its_task_delivered_again_and_refused(tmp_path, broker):
    """SIGSTOP, as a host that hangs: Redis delivers the task again, the other worker refuses it (the lease is
    held), the lapsed lease costs the item an attempt, and the stopped worker's late answer is never read:
    the supervisor refuses it and sweeps the files it wrote, while the next attempt runs on the other worker."""
    root = tmp_path / "root"
    quick = {"broker_visibility_timeout_seconds": 4}
    with (
        celery_daemon(root, broker.url, job_slots=1, **quick) as daemon,
        Worker(root, broker.url, "w1", **quick) as stopped,
    ):
        drop(root / "inbox", "hang/a.jpg", "sleep 3")
        wait_for(lambda: worker_events(stopped, "task_started"), what="the job running on w1")
        hung = freeze(stopped)
        with Worker(root, broker.url, "w2", **quick) as other:
            refused = wait_for(lambda: worker_events(other, "task_refused"), timeout=60, what="the duplicate refused")
            wait_for(
                lambda: [e for e in daemon.events("job_started") if e["attempt"] == 2],
                timeout=60,
                what="attempt 2 under way",
            )
            thaw(hung)  # while the original is still there to read: attempt 1 ends well, and late
            late = wait_for(lambda: worker_events(stopped, "task_finished"), what="w1's late answer")
            swept = wait_for(lambda: daemon.events("late_answer_refused"), timeout=60, what="the late answer refused")
            status = daemon.wait_complete("hang", timeout=120)
            finished = daemon.events("job_finished")
            leftovers = sorted(path.name for path in (root / "state" / "results").iterdir())
    assert (refused[0]["task"], refused[0]["reason"].split(":")[0]) == ("bgremover-1-1", "a duplicate delivery")
    assert (late[0]["task"], late[0]["returncode"]) == ("bgremover-1-1", 0)  # attempt 1 ran to its end on w1
    item = status["items"][0]
    assert (item["status"], item["attempts"], item["worker"].split("@")[0]) == ("done", 2, "w2")
    assert [(event["status"], event["attempt"]) for event in finished] == [("queued", 1), ("done", 2)]
    assert (swept[0]["task"], swept[0]["worker"].split("@")[0]) == ("bgremover-1-1", "w1")
    assert "1-1.png" in swept[0]["files_removed"]
    assert not [name for name in leftovers if name.startswith("1-1.")], leftovers


def test_a_late_answer_is_refused_and_swept_by_a_restarted_supervisor_too(tmp_path, broker):
    """The fence on a given-up attempt is kept in Redis: a supervisor killed and restarted meanwhile still
    refuses the attempt's late answer and removes its files, and takes up the next attempt where it runs."""
    root = tmp_path / "root"
    quick = {"broker_visibility_timeout_seconds": 4}
    daemon = celery_daemon(root, broker.url, job_slots=1, **quick)
    with daemon, Worker(root, broker.url, "w1", **quick) as stopped:
        drop(root / "inbox", "hang/a.jpg", "sleep 3")
        wait_for(lambda: worker_events(stopped, "task_started"), what="the job running on w1")
        hung = freeze(stopped)
        with Worker(root, broker.url, "w2", **quick):
            wait_for(
                lambda: [e for e in daemon.events("job_started") if e["attempt"] == 2],
                timeout=60,
                what="attempt 2 under way",
            )
            daemon.kill()
            daemon.start()
            thaw(hung)
            swept = wait_for(lambda: daemon.events("late_answer_refused"), timeout=60, what="the late answer refused")
            status = daemon.wait_complete("hang", timeout=120)
            adopted = daemon.events("job_adopted")
    assert swept[0]["task"] == "bgremover-1-1" and "1-1.png" in swept[0]["files_removed"]
    assert [event["task_id"] for event in adopted] == ["bgremover-1-2"]
    item = status["items"][0]
    assert (item["status"], item["attempts"], item["worker"].split("@")[0]) == ("done", 2, "w2")


def test_a_new_root_on_the_same_broker_is_not_refused_for_the_old_roots_task_ids(tmp_path, broker):
    """Its items are numbered from 1 again: the old root's concluded marks and waiting tasks go first."""
    old, new, gate = tmp_path / "old", tmp_path / "root", tmp_path / "gate"
    daemon = celery_daemon(old, broker.url, job_slots=2)
    with daemon:
        with Worker(old, broker.url, "w1") as worker:
            drop(old / "inbox", "first/a.jpg", "ok")
            daemon.wait_complete("first", timeout=120)
            busy(old, worker, gate)
            drop(old / "inbox", "left/b.jpg", "ok")
            wait_for(lambda: broker.client().llen(QUEUE_KEY), what="its task waiting in the broker")
            daemon.kill()  # gone with its root, the task still waiting
            gate.touch()  # the worker's running job ends, so it can stop
    assert broker.client().exists("bgremover:concluded:bgremover-1-1")
    with celery_daemon(new, broker.url, job_slots=1) as daemon, Worker(new, broker.url, "w1") as worker:
        drop(new / "inbox", "again/a.jpg", "ok")
        status = daemon.wait_complete("again", timeout=120)
        replaced = daemon.events("broker_root_replaced")
        ran = worker_events(worker, "task_started")
    assert replaced, "the new root did not notice the broker served another"
    assert (status["items"][0]["status"], status["items"][0]["attempts"]) == ("done", 1)
    assert [event["task"] for event in ran] == ["bgremover-1-1"], "the old root's waiting task ran in the new one"


def test_bench_workers_runs_the_same_images_through_local_slots_then_through_the_workers(tmp_path, broker):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bgremover",
            "bench",
            "--workers",
            "2",
            "--broker",
            broker.url,
            "--size",
            "320x240",
            "--count",
            "4",
            "--json",
            "--root",
            str(tmp_path / "root"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    workers, cores = document["workers"], document["machine"]["usable_cores"]
    local, local_2, cluster = workers["local_1_slot"], workers["local_2_slots"], workers["celery_2_workers_of_1_slot"]
    assert (local["job_slots"], local_2["job_slots"], cluster["job_slots"]) == (1, 2, 3)  # the workers' and the spare
    assert workers["workers_over_2_local_slots_ratio"] == round(cluster["images_per_s"] / local_2["images_per_s"], 2)
    assert (local["threads_per_job"], cluster["threads_per_job"]) == (cores, max(1, cores // 2))  # a share each
    assert [(run["done"], run["failed"]) for run in (local, local_2, cluster)] == [(4, 0)] * 3
    assert workers["workers_over_1_local_slot_ratio"] == round(cluster["images_per_s"] / local["images_per_s"], 2)
    unreachable = subprocess.run(
        [
            sys.executable,
            "-m",
            "bgremover",
            "bench",
            "--workers",
            "2",
            "--count",
            "1",
            "--root",
            str(tmp_path / "root"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.strip() == (
        "bgremover: --workers needs a broker: --broker redis://127.0.0.1:6379/0 (a redis-server of yours)"
    )
