"""The fast tier: everything here runs inside the test process.

A test that starts a process (a `bgremover` command, a job, a daemon) belongs in
another folder: tests/commands, tests/daemon, tests/model. The guard below makes
that a failure rather than a slow surprise.
"""

from __future__ import annotations

import os
import subprocess

import pytest


class StartsAProcess(AssertionError):
    pass


def refuse(*args, **kwargs):
    raise StartsAProcess("a test in tests/unit starts no process; move it to tests/commands, daemon or model")


@pytest.fixture(autouse=True)
def no_process(monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    monkeypatch.setattr(os, "posix_spawnp", refuse)
