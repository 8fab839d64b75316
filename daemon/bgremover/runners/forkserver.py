"""Fresh job processes, forked from a parent that has already loaded everything.

One process per image keeps a crash, a leak or a poisoned model session from
reaching the next image. What it costs is start-up: a new interpreter spends
about 0.4 s importing numpy, Pillow and onnxruntime before it sees the image.
So the supervisor starts this module once (`python -m bgremover.runners.forkserver`), as
a process of its own: it imports the job module, lets it load what every job
shares (the model file's bytes), stays single-threaded, and forks a clean child
whenever it is asked for one.

A child starts as a *standby*: it prepares at once (creates its own
onnxruntime session, with its own threads), tells the supervisor it is ready,
then waits holding no image until the supervisor hands it exactly one job. It
runs that job and exits. The supervisor asks for the next standby as soon as it
hands out a job, so the next process's start-up overlaps the current job
instead of following it: still one fresh process per job, still one image in
flight.

Each standby is forked twice and the middle process exits at once. The standby
is then re-parented to the supervisor (a child subreaper, see
`become_subreaper`), which reaps it with wait4 exactly like a process it
started itself, and so learns its exit status and its peak memory.

The job module may define five functions (only `main` is required):
  preload(config) -> shared    once, in this parent; an exception is a start-up error
  variant(shared, request) -> shared
                               in this parent, for a spawn that carries a request
                               (say, another model than the default's)
  prepare(shared) -> prepared  in each fresh child, before it has an image
  warm(prepared)               in a child the supervisor has no job for yet (see Standby.warm)
  main(argv, prepared) -> int  the job; its return value is the exit code
`config` is the JSON object the supervisor passed on the command line.

Messages are JSON, one per SOCK_SEQPACKET datagram between the supervisor and
this server, one per line on the stream socket between the supervisor and a
standby. A standby's socket travels to the supervisor as an SCM_RIGHTS file
descriptor, so after the hand-over this server takes no part in the job.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from types import ModuleType

MAX_MESSAGE = 64 * 1024
MALLOC_TUNABLES = {
    "glibc.malloc.hugetlb": 1,
    # Image buffers up to 32 MB come from the heap, and freed heap stays with
    # the process (a job is short-lived): memory a standby touched while
    # warming is reused by its job instead of being faulted in afresh.
    "glibc.malloc.mmap_threshold": 32 * 1024 * 1024,
    "glibc.malloc.trim_threshold": 1024 * 1024 * 1024,
}
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


class ForkServerError(Exception):
    """The fork server could not start or stopped answering; one sentence saying why."""


# ---------------------------------------------------------------- the supervisor's side


def become_subreaper() -> None:
    """Adopt orphaned descendants, so standbys forked by the server become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ForkServerError(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


@dataclass
class Standby:
    """A fresh job process that has not been given its job yet."""

    pid: int
    conn: socket.socket
    request: dict | None = None  # what it was prepared for (the job module's variant), None for the default
    ready: dict | None = None  # its readiness message, once read
    warmed: bool = False

    def wait_ready(self, timeout: float) -> dict:
        """Its readiness message: {"ready": true, ...} or {"error": sentence}."""
        if self.ready is None:
            self.conn.settimeout(timeout)
            try:
                line = self.conn.makefile("rb").readline(MAX_MESSAGE)
            except (OSError, TimeoutError) as exc:
                raise ForkServerError(f"the job process {self.pid} did not get ready: {exc}") from None
            finally:
                self.conn.settimeout(None)
            if not line:
                raise ForkServerError(f"the job process {self.pid} exited before it was ready")
            self.ready = json.loads(line)
        return self.ready

    def poll_ready(self) -> dict | None:
        """Its readiness message if it has arrived, without waiting."""
        if self.ready is None:
            try:
                data = self.conn.recv(MAX_MESSAGE, socket.MSG_DONTWAIT | socket.MSG_PEEK)
            except (BlockingIOError, OSError):
                return None
            if data.endswith(b"\n"):
                self.ready = json.loads(self.conn.recv(len(data)))
        return self.ready

    def warm(self) -> None:
        """Ask it to run the model once on a dummy input while there is nothing else to do.

        A fresh process's first run faults in a few hundred MB of working
        memory; right after another job exits that memory comes straight back,
        but after an idle spell (notably in a VM that hands freed memory back to
        its host) the first run can take twice as long. Warming while idle moves
        that cost out of the next image's time.
        """
        with contextlib.suppress(OSError):  # a dead standby is noticed when it is next needed
            self.conn.sendall(b'{"warm": true}\n')
        self.warmed = True

    def assign(self, argv: list[str], log_path: str) -> None:
        """Hand over the job; raises OSError if the standby has died meanwhile.

        Our end stays open until the job has exited (see `dismiss`): closing a
        Unix socket with its ready message still unread would reset the
        connection, and the job could lose the assignment we just sent.
        """
        message = json.dumps({"argv": argv, "log": log_path}) + "\n"
        self.conn.sendall(message.encode("utf-8"))

    def alive(self) -> bool:
        """Whether it still runs; a standby that died is reaped here (it is the supervisor's child)."""
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def dismiss(self) -> None:
        """Let it go unused: end-of-file on its socket makes it exit."""
        self.conn.close()


class ForkServer:
    """The supervisor's handle on the fork server process."""

    def __init__(self, job_module: str, config: dict) -> None:
        self.job_module = job_module
        self.config = config
        self.process: subprocess.Popen | None = None
        self.sock: socket.socket | None = None

    def start(self, timeout: float = 120.0) -> dict:
        """Start the server and wait until it has preloaded; returns its greeting."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [
            sys.executable, "-m", "bgremover.runners.forkserver", "--socket-fd", str(theirs.fileno()),
            "--job-module", self.job_module, "--config", json.dumps(self.config),
        ]  # fmt: skip
        env = {**os.environ, **preload_environment()}
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()], env=env)
        finally:
            theirs.close()
        self.sock = ours
        hello = self.receive(timeout, "start")
        if "error" in hello:
            self.close()
            raise ForkServerError(hello["error"])
        return hello

    def spawn(self, request: dict | None = None, timeout: float = 30.0) -> Standby:
        """A new standby, prepared for `request` (see the job module's `variant`) or for the default."""
        if self.sock is None:
            raise ForkServerError("the fork server is not running")
        try:
            self.sock.send(json.dumps({"op": "spawn", "request": request}).encode())
            self.sock.settimeout(timeout)
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        except OSError as exc:
            raise ForkServerError(f"the fork server stopped answering: {exc}") from None
        finally:
            if self.sock is not None:
                self.sock.settimeout(None)
        if not data or not fds:
            raise ForkServerError("the fork server exited")
        reply = json.loads(data)
        return Standby(pid=int(reply["pid"]), conn=socket.socket(fileno=fds[0]), request=request)

    def receive(self, timeout: float, what: str) -> dict:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except OSError as exc:
            raise ForkServerError(f"the fork server did not {what}: {exc}") from None
        finally:
            self.sock.settimeout(None)
        if not data:
            code = self.process.wait(timeout=10) if self.process else None
            raise ForkServerError(f"the fork server exited during {what} (exit code {code}); see the log above")
        return json.loads(data)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End-of-file tells the server to exit; it is killed if it does not."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def preload_environment() -> dict[str, str]:
    """Environment for the fork server, and so for every job forked from it.

    OPENBLAS_NUM_THREADS=1: numpy's BLAS would otherwise start a thread pool
    at import, and a parent that forks must not have threads.
    ORT_DISABLE_TELEMETRY=1: onnxruntime's import would otherwise start a
    telemetry thread and open its own SQLite file (under ~/.cache/Microsoft),
    which every job forked from here would inherit, the file's locks included. The glibc
    tunable lets malloc back big allocations with transparent huge pages
    (where the kernel allows it on request): a fresh process then faults in
    onnxruntime's working memory in far fewer, larger pieces, which is most of
    why a new session's first run is slower than its second.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for tunable, value in MALLOC_TUNABLES.items():
        if tunable not in tunables:
            tunables = ":".join(filter(None, [tunables, f"{tunable}={value}"]))
    return {"OPENBLAS_NUM_THREADS": "1", "ORT_DISABLE_TELEMETRY": "1", "GLIBC_TUNABLES": tunables}


def tune_malloc_here() -> None:
    """Give this process the jobs' heap settings (MALLOC_TUNABLES) where mallopt can: the bench's
    in-process pipeline is then measured with the same allocator behaviour as a job."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    mallopt(m_mmap_threshold, MALLOC_TUNABLES["glibc.malloc.mmap_threshold"])
    mallopt(m_trim_threshold, MALLOC_TUNABLES["glibc.malloc.trim_threshold"])


# ---------------------------------------------------------------- the server's side


def serve(sock: socket.socket, job_module: str, config: dict) -> int:
    # Ctrl-C in a terminal reaches the whole foreground process group; the
    # supervisor decides about stopping and tells us by closing the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        module = importlib.import_module(job_module)
        preload = getattr(module, "preload", None)
        shared = preload(config) if preload else None
    except Exception as exc:  # noqa: BLE001 - any start-up failure becomes one sentence for the supervisor
        sock.send(json.dumps({"error": describe(exc)}).encode())
        return 1
    sock.send(json.dumps({"ready": True, "pid": os.getpid(), "threads": threads_here()}).encode())
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except ConnectionResetError:
            return 0
        if not data:  # the supervisor closed its end: stop
            return 0
        message = json.loads(data)
        if message.get("op") == "spawn":
            variant = getattr(module, "variant", None)
            request = message.get("request")
            pid, conn = fork_standby(module, variant(shared, request) if variant and request else shared, sock)
            socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [conn.fileno()])
            conn.close()


def describe(exc: BaseException) -> str:
    """Our own errors already read as a sentence; anything else is named by its class."""
    if type(exc).__module__.startswith("bgremover."):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def fork_standby(module: ModuleType, shared: object, server_sock: socket.socket) -> tuple[int, socket.socket]:
    """Fork a standby through a middle process that exits at once; returns its pid and our socket to it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid_read, pid_write = os.pipe()
    forked_at = time.monotonic()  # one clock for every process: the child measures its start from here
    middle = os.fork()
    if middle == 0:
        try:
            pid = os.fork()
            if pid == 0:
                os.close(pid_read)
                os.close(pid_write)
                ours.close()
                server_sock.close()
                close_inherited(keep=theirs.fileno())
                run_standby(theirs, module, shared, forked_at)  # never returns
            os.setpgid(pid, pid)  # also done by the child: whichever runs first, no killpg misses it
            os.write(pid_write, str(pid).encode())
        finally:
            os._exit(0)
    os.close(pid_write)
    theirs.close()
    pid = int(os.read(pid_read, 32) or b"0")
    os.close(pid_read)
    os.waitpid(middle, 0)  # once the middle is gone, the standby's parent is the supervisor
    if pid == 0:
        raise ForkServerError("forking a job process failed")
    return pid, ours


def close_inherited(keep: int) -> None:
    """In a fresh child: close every descriptor but stdin, stdout, stderr and `keep` (its socket to the supervisor).

    Whatever a library opened in the server (a cache, a database, a log) would
    otherwise be shared by every job: a SQLite file written from two processes
    through one inherited descriptor corrupts, and its locks are the server's.
    The server's own Python objects holding descriptors are closed above, so
    none of these numbers is closed a second time once reused by the job.
    """
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def threads_here() -> int:
    """How many threads this process runs; a process that forks must run one (the child gets only the forking
    thread, and any lock another thread held stays locked in it forever)."""
    return len(os.listdir("/proc/self/task"))


def run_standby(conn: socket.socket, module: ModuleType, shared: object, forked_at: float) -> None:
    """The child: prepare, say ready, take one job, exit with its code. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: one killpg reaches anything the job starts
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        started = time.perf_counter()
        prepare = getattr(module, "prepare", None)
        prepared = prepare(shared) if prepare else None
        # prepare_ms: the session alone; start_ms: from the fork to ready, the whole price of a fresh process.
        ready = {
            "ready": True,
            "prepare_ms": round((time.perf_counter() - started) * 1000, 1),
            "start_ms": round((time.monotonic() - forked_at) * 1000, 1),
        }
        describe_prepared = getattr(prepared, "describe", None)
        if describe_prepared is not None:
            ready.update(describe_prepared())
        assignment = wait_for_job(conn, ready, module, prepared)
        conn.close()
        redirect_output(assignment["log"])
        code = run_job(module, assignment["argv"], prepared)
    except BaseException:  # noqa: BLE001 - nothing may unwind into the server's code in this child
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream must not stop the exit
                stream.flush()
        # _exit: no interpreter teardown (it costs tens of ms and runs the parent's atexit hooks).
        os._exit(code)


def wait_for_job(conn: socket.socket, ready: dict, module: ModuleType, prepared: object) -> dict:
    """Say ready, then wait for the job; warm up meanwhile if the supervisor says there is time."""
    lines = conn.makefile("rb")

    def next_line() -> bytes:
        try:
            return lines.readline(MAX_MESSAGE)
        except OSError:  # a reset or broken connection means the same as end-of-file
            return b""

    with contextlib.suppress(OSError):  # the supervisor gone already: the read below sees it
        conn.sendall((json.dumps(ready) + "\n").encode())
    line = next_line()
    while line and json.loads(line).get("warm"):
        warm = getattr(module, "warm", None)
        if warm is not None:
            warm(prepared)
        line = next_line()
    if not line:  # dismissed, or the supervisor is gone
        os._exit(0)
    return json.loads(line)


def run_job(module: ModuleType, argv: list[str], prepared: object) -> int:
    try:
        result = module.main(argv, prepared) if hasattr(module, "prepare") else module.main(argv)
    except SystemExit as exc:  # argparse and sys.exit inside the job
        result = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return int(result or 0)


def redirect_output(path: str) -> None:
    """The job's stdout and stderr go to its own log file, as for a process started with Popen."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bgremover.runners.forkserver", description=__doc__.splitlines()[0])
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--job-module", required=True)
    parser.add_argument("--config", type=json.loads, default={})
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.socket_fd)
    return serve(sock, args.job_module, args.config)


if __name__ == "__main__":
    sys.exit(main())
