"""Fake job bodies for supervisor tests, run as `python -m tests.support.fakejob` in place of bgremover.job.

The dropped file's first line picks the behaviour, so a test chooses what each
job does simply by what it drops: `ok`, `exit N`, `sleep [S]`, `flaky FLAGFILE`, `ignore-term`,
`grandchild PIDFILE`, `sigkill`,
`signal N` (dies by signal N, real-time ones too), `chatty N`, `memory MB`, `bad-input`, `whoami JSONFILE`,
`orphan PIDFILE`, `fds JSONFILE`, `gate FILE` (waits until FILE exists, then succeeds),
`bytes MB` (a result of MB mebibytes that no compressor shrinks),
`flag CODE...` (done, its report raising those quality signals while edges is raw; its cutout names its options).
Anything else is `ok`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Imported at the top, as the real job imports it: the fork server then holds
# whatever onnxruntime's import leaves in a process (threads, open files).
import onnxruntime  # noqa: F401

# Made once, when the fork server imports this module: every process forked from
# it inherits them. `whoami` shows that a job runs in a fresh process (its count
# of jobs is always 1) forked from the one preloaded parent (the object's id).
JOBS_IN_THIS_PROCESS = 0
PRELOADED = object()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("input", "output", "report", "format", "quality", "model", "models-dir", "edges", "alpha"):
        parser.add_argument(f"--{name}")
    return parser.parse_known_args(argv)[0]  # the real job's other options do not matter here


def write_result(args: argparse.Namespace) -> None:
    temp = Path(args.output).with_name(".tmp-" + Path(args.output).name)
    temp.write_bytes(b"cutout of " + Path(args.input).read_bytes())
    os.replace(temp, args.output)


def write_bulk_result(args: argparse.Namespace, mebibytes: int) -> None:
    """A big result, written as the real job writes one: a temp file, renamed into place."""
    block = os.urandom(1 << 20)  # random: stored as is in the ZIP, as a PNG's deflated data would be
    temp = Path(args.output).with_name(".tmp-" + Path(args.output).name)
    with open(temp, "wb") as out:
        for _ in range(mebibytes):
            out.write(block)
    os.replace(temp, args.output)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    words = Path(args.input).read_text(errors="replace").split("\n", 1)[0].split()
    verb, rest = (words[0], words[1:]) if words else ("ok", [])
    if verb == "exit":
        return int(rest[0])
    if verb == "bad-input":
        Path(args.report).write_text(json.dumps({"error": "the file is not an image Pillow can read"}))
        return 2
    if verb == "sleep":
        time.sleep(float(rest[0]) if rest else 3600)
    if verb == "gate":  # the test decides when it ends, however slow the machine is
        while not Path(rest[0]).exists():
            time.sleep(0.05)
    if verb == "flaky":  # fails the first time, works on the retry
        flag = Path(rest[0])
        if not flag.exists():
            flag.write_text("failed once")
            Path(args.report).write_text(json.dumps({"error": "could not write the result: disk full"}))
            return 75
    if verb == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
    if verb == "grandchild":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        Path(rest[0]).write_text(str(child.pid))
        time.sleep(3600)
    if verb == "whoami":  # then succeed
        global JOBS_IN_THIS_PROCESS
        JOBS_IN_THIS_PROCESS += 1
        me = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgrp(),
            "jobs_in_this_process": JOBS_IN_THIS_PROCESS,
            "preloaded_id": id(PRELOADED),
        }
        Path(rest[0]).write_text(json.dumps(me))
    if verb == "orphan":  # leave a grandchild behind that ignores SIGTERM, then succeed
        ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        # PIDFILE on its command line: a leaked grandchild mentions the test's folder.
        child = subprocess.Popen([sys.executable, "-c", ignore_term, rest[0]])
        Path(rest[0]).write_text(str(child.pid))
    if verb == "fds":  # the descriptors this job was given, by number and what each is; then succeed
        found = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                found[name] = os.readlink(f"/proc/self/fd/{name}")
            except FileNotFoundError:  # the listing's own descriptor, closed by now
                pass
        Path(rest[0]).write_text(json.dumps(found))
    if verb == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if verb == "signal":  # its default action ends the process, as a real-time signal's does
        number = int(rest[0])
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
        time.sleep(10)  # the signal lands before this returns
    if verb == "chatty":  # N bytes of warnings on stderr, then a last line, then succeed
        sys.stderr.write("x" * int(rest[0]) + "\nlast words\n")
    if verb == "memory":
        hog = bytearray(int(rest[0]) * 1024 * 1024)  # touched, so it is resident
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        time.sleep(3600)
    if verb == "bytes":  # N MiB; with a gate, once the test has opened it
        while len(rest) > 1 and not Path(rest[1]).exists():
            time.sleep(0.05)
        write_bulk_result(args, int(rest[0]))
        return 0
    if verb == "flag":  # the signals, only with the raw edges: a review retry with other edges comes out clean
        raised = [{"code": code, "reason": f"{code} was raised"} for code in rest] if args.edges == "raw" else []
        Path(args.report).write_text(json.dumps({"review": raised}))
        made_with = f" (model {args.model}, edges {args.edges})"
        if args.alpha:
            made_with += " with the mask " + Path(args.alpha).read_text(errors="replace")
        Path(args.output).write_bytes(b"cutout of " + Path(args.input).read_bytes() + made_with.encode())
        return 0
    write_result(args)
    return 0


def warm(prepared: object) -> None:
    """Called in a waiting job process when the daemon is idle; BGREMOVER_TEST_WARM_DIR/<pid> records it."""
    folder = os.environ.get("BGREMOVER_TEST_WARM_DIR")
    if folder:
        (Path(folder) / str(os.getpid())).write_text("warmed")


if __name__ == "__main__":
    sys.exit(main())
