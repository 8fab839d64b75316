"""A worker's checks of itself (runners/celery/fitness.py), on real folders and model files: one sentence each."""

from __future__ import annotations

import hashlib

import pytest

from bgremover import __version__
from bgremover.runners.celery.fitness import Fitness, Published
from bgremover.settings import load_settings
from bgremover.status.workers import lines
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

IDENTITY = "0123456789abcdef"


@pytest.fixture
def root(tmp_path):
    """A supervisor's root as a worker sees it: its identity, originals, results, and one model."""
    root = tmp_path / "root"
    for folder in ("state/originals", "state/results", "models"):
        (root / folder).mkdir(parents=True)
    (root / "state" / "root-id").write_text(IDENTITY)
    model = redness_model(root / "models" / "tiny.onnx")
    write_manifest(root / "models", {"tiny": manifest_entry(model)})
    return root


def published(root) -> dict:
    digest = hashlib.sha256((root / "models" / "tiny.onnx").read_bytes()).hexdigest()
    return {"version": __version__, "model": "tiny", "sha256": digest}


def fitness(root) -> Fitness:
    return Fitness(load_settings(None, root=root))


def test_a_worker_that_matches_the_supervisor_has_no_problem(root):
    assert fitness(root).problem(IDENTITY, published(root)) is None


def test_another_version_is_named_with_both(root):
    facts = {**published(root), "version": "9.9.9"}
    assert fitness(root).problem(IDENTITY, facts) == (
        f"this worker runs bgremover {__version__} and the supervisor 9.9.9: install the same version on both"
    )


def test_another_root_is_named(root):
    assert fitness(root).problem("another", published(root)) == (
        f"{root} is not the supervisor's root (its state/root-id differs, or is missing): "
        "mount the supervisor's root there"
    )


def test_an_identity_file_that_cannot_be_read_is_one_line_not_a_traceback(root):
    (root / "state" / "root-id").unlink()
    (root / "state" / "root-id").mkdir()  # read() fails as a missing permission would, with an OSError
    assert fitness(root).problem(IDENTITY, published(root)) == (
        f"cannot read {root / 'state' / 'root-id'}: Is a directory"
    )


def test_results_that_cannot_be_written_are_named(root):
    (root / "state" / "results").rmdir()
    (root / "state" / "results").write_text("a file where the folder should be")
    assert fitness(root).problem(IDENTITY, published(root)) == (
        f"cannot write in {root / 'state' / 'results'}: Not a directory"
    )


def test_a_missing_or_changed_model_is_named_and_the_checksum_follows_the_file(root):
    checks = fitness(root)
    facts = published(root)
    assert checks.problem(IDENTITY, facts) is None
    (root / "models" / "tiny.onnx").write_bytes(b"another model altogether, of another size")
    assert checks.problem(IDENTITY, facts) == (
        f"model file {root / 'models' / 'tiny.onnx'} is not the supervisor's model 'tiny' (its sha256 differs)"
    )
    (root / "models" / "tiny.onnx").unlink()
    assert checks.problem(IDENTITY, facts).startswith("the supervisor's model 'tiny' cannot be used here: ")


def test_no_supervisor_yet_is_said_and_facts_the_broker_lost_are_kept(root):
    assert fitness(root).problem(None, None) == (
        "no supervisor has published its root on this broker yet: start `bgremover run` first"
    )
    seen = Published("root", {"version": "1"})
    assert seen.updated(None, None) == seen
    assert seen.updated("new", None) == Published("new", {"version": "1"})


def test_status_counts_only_the_slots_of_workers_that_take_work_and_says_why_the_others_do_not():
    workers = [
        {"name": "a@h", "slots": 2, "seen_s_ago": 1.0, "problem": None},
        {"name": "b@h", "slots": 4, "seen_s_ago": 2.0, "problem": "model file x is not the supervisor's"},
    ]
    assert lines(workers, None) == [
        "workers: 2, 2 slots: a@h (2 slots, 1 s ago), b@h (4 slots, 2 s ago, takes no work)",
        "  b@h takes no work: model file x is not the supervisor's",
    ]


class BrokerMarks:
    """The broker as a starting worker reads it: its root and facts (None: lost or never published)."""

    published: tuple[str | None, dict | None] = (None, None)

    def __init__(self, url: str) -> None:
        self.heartbeats: list[str | None] = []

    def ping(self) -> bool:
        return True

    def foreign_keys(self) -> tuple[int, list[str]]:
        return 0, []

    def root(self) -> str | None:
        return self.published[0]

    def supervisor(self) -> dict | None:
        return self.published[1]

    def heartbeat(self, hostname, slots, version, problem, models) -> None:
        self.heartbeats.append(problem)


def test_a_worker_started_while_the_broker_holds_no_root_waits_gated_and_one_that_is_unfit_is_refused(
    root, monkeypatch
):
    """A Redis restarted without persistence, or emptied, has lost the root until the supervisor publishes it again:
    a worker started then waits, taking nothing, instead of exiting; a worker found unfit is still refused at once."""
    from bgremover.runners.celery import worker

    monkeypatch.setattr(worker, "Marks", BrokerMarks)
    monkeypatch.setattr(worker, "missing_providers", lambda wanted: None)
    settings = load_settings(None, root=root, broker_url="redis://127.0.0.1:1/0")
    _, health = worker.check(settings, "new@host", 1)
    assert health.problem == "no supervisor has published its root on this broker yet: start `bgremover run` first"
    monkeypatch.setattr(BrokerMarks, "published", ("another root", published(root)))
    with pytest.raises(worker.WorkerRefused, match="root"):
        worker.check(settings, "new@host", 1)
    monkeypatch.setattr(BrokerMarks, "published", (IDENTITY, published(root)))
    assert worker.check(settings, "new@host", 1)[1].problem is None
