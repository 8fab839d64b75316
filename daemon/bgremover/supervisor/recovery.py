"""Start-up after any end, a kill -9 included: put every item and file back where a step can take it up.

Run once, before the watcher starts and before any job: items a previous life
was processing go back to the queue (their job, if it still runs, is ended
first), half-finished takes are finished, temp files and results no step will
read are removed, and every session is brought to where it belongs, its
status JSON current. A complete session remembered as settled (its files
settled and its JSON published, see Publisher.remember_settled) needs none of
this, so a start looks only at the sessions that are not: its cost follows the
work under way, not the history behind it.
"""

from __future__ import annotations

import time

import structlog

from bgremover import durable
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.queue.states import SessionState, Status
from bgremover.runners.api import JobRunner
from bgremover.supervisor.markers import Markers
from bgremover.supervisor.sessions import may_rebuild
from bgremover.supervisor.taking import Taking

log = structlog.get_logger()


class Recovery:
    def __init__(self, runner: JobRunner, taking: Taking, markers: Markers) -> None:
        self.runner = runner
        self.taking = taking
        self.markers = markers
        self.sessions = taking.sessions
        self.store, self.spool, self.settings = taking.store, taking.spool, taking.settings

    def recover(self, adopted: frozenset[int] = frozenset()) -> None:
        """`adopted`: the items whose job was taken up again; they stay in processing, with their files."""
        now = time.time()
        for item in self.store.recover(now, keep=adopted):  # PROCESSING -> QUEUED
            if item.job_pid and self.runner.forget(item.job_pid, item.job_pid_start):
                log.warning("leftover_job_killed", session=item.session, item=item.name, pid=item.job_pid)
            log.warning("item_recovered", session=item.session, item=item.name, status="queued")
        for pid in self.runner.forget_unrecorded():
            log.warning(
                "leftover_process_killed",
                pid=pid,
                note="forked for this root by the previous life; its pid was not recorded",
            )
        for item in self.store.items(None, Status.QUEUED):
            self.taking.finish_take(item)
        self.markers.ensure_marker_folders()
        # The adopted jobs' files are named after their attempt; they may be writing them now.
        running = frozenset(
            self.spool.job_stem(item) for item in self.store.items(None, Status.PROCESSING) if item.id in adopted
        )
        removed = durable.remove_temp_files(self.settings.outbox) + durable.remove_temp_files(
            self.spool.results, spare=running
        )
        if removed:
            log.info("temp_files_removed", count=removed)
        self.sweep_results(running)
        for session in self.store.unsettled_sessions():
            if session.state is SessionState.PROCESSING:
                self.sessions.unfinished.add(session.name)
            elif session.state is SessionState.COMPLETE:
                self.sessions.settle(session)
            self.sessions.publisher.publish_if_stale(session)

    def still_needed(self, ids: set[str]) -> set[str]:
        """The result names a ZIP may still need, among the items the files left in state/results name.

        Read from the files that are there, not from every session ever: a start-up
        costs what the spool holds, however long the history behind it.
        """
        needed, extensions = set(), {}
        for item in filter(None, (self.store.item(int(id_)) for id_ in ids if id_.isdigit())):
            if item.session not in extensions:
                extensions[item.session] = self.result_extension(item.session)
            ext = extensions[item.session]
            if ext is not None and item.status is Status.DONE:
                needed |= {self.spool.result(item, ext).name, self.spool.mask_result(item).name}
                needed |= {path.name for path in self.spool.render_files(item)}
        return needed

    def result_extension(self, name: str) -> str | None:
        """Its cutouts' extension if a ZIP may still need them: an unfinished session, or a complete
        one a retry may write again (Sessions.settle); None if none will."""
        session = self.store.session(name)
        if session is None:
            return None
        if session.state is SessionState.COMPLETE and not may_rebuild(self.store.items(name)):
            return None
        return FORMAT_EXTENSIONS[session.format]

    def sweep_results(self, running: frozenset[str] = frozenset()) -> None:
        """At start-up, before any job but the adopted: keep only the cutouts a ZIP may still need.

        A kill can leave a job's files behind at several points: a job that
        finished after its daemon died (its item runs again as a new attempt), or
        a verdict recorded just before its files were removed. No later step reads
        them, so whatever is not a done item's cutout for an unfinished session
        or for a complete one that may be rebuilt after a retry (Sessions.settle),
        nor a file of a job still `running` (by its stem, see Spool.job_stem), goes.
        """
        files = [path for path in self.spool.results.iterdir() if path.is_file()]
        waiting = self.still_needed({stem.split("-", 1)[0] for stem in (path.name.split(".", 1)[0] for path in files)})
        swept = [path for path in files if path.name not in waiting and path.name.split(".", 1)[0] not in running]
        self.spool.discard(*swept)
        if swept:
            log.info("job_files_removed", count=len(swept), reason="left by a previous life")
