"""Whether this worker can do the supervisor's work: each check one sentence when it fails, None when all pass.

A worker that runs another bgremover, lacks the supervisor's model, or has lost
the shared root would fail every image it takes, each for a reason that is the
worker's, not the image's. So it proves itself first, at start and every few
seconds after: the same version as the supervisor (which publishes its own
with the root), the supervisor's model file with its checksum, the shared root
readable and writable and the same root, and, at start, its providers. Cheap
enough to run often: a few stats, a small read, a file made and removed; the
model's checksum is computed again only when its file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bgremover.runners.celery.message import ROOT_ID_FILE, root_identity
from bgremover.settings import Settings
from bgremover.version import __version__


@dataclass(frozen=True)
class Published:
    """The supervisor's root identity and facts as a worker last read them, kept while the broker has lost them
    (a restart without persistence) until the supervisor publishes them again."""

    root: str | None
    supervisor: dict | None

    @property
    def known(self) -> bool:
        """Both published: a worker can be judged against them."""
        return self.root is not None and self.supervisor is not None

    def updated(self, root: str | None, supervisor: dict | None) -> Published:
        return Published(root or self.root, supervisor or self.supervisor)


# Each check's name, for the worker's metrics (a fixed set, so never a label of unbounded values):
# a supervisor published on the broker, the same version, the same root readable and writable,
# the supervisor's model; and, at start only, the providers.
CHECKS = ("supervisor", "version", "root", "model", "providers")

PROVIDERS_PROBE = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"


class Fitness:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hashed: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: a file hashed once until it changes

    def problem(self, published_root: str | None, supervisor: dict | None) -> str | None:
        """The first thing that keeps this worker from the supervisor's work, in one sentence; None if nothing does."""
        failed = self.failing(published_root, supervisor)
        return failed[1] if failed else None

    def failing(self, published_root: str | None, supervisor: dict | None) -> tuple[str, str] | None:
        """The first check that fails (one of CHECKS) and its sentence; None if all pass."""
        if published_root is None or supervisor is None:  # the facts come with the root: a supervisor of today
            return "supervisor", "no supervisor has published its root on this broker yet: start `bgremover run` first"
        for name, check in (("version", self.version), ("root", self.root), ("model", self.model)):
            problem = check(published_root, supervisor)
            if problem:
                return name, problem
        return None

    def version(self, published_root: str, supervisor: dict) -> str | None:
        if supervisor.get("version") != __version__:
            return (
                f"this worker runs bgremover {__version__} and the supervisor {supervisor.get('version')}: "
                "install the same version on both"
            )
        return None

    def root(self, published_root: str, supervisor: dict) -> str | None:
        settings = self.settings
        try:
            ours = root_identity(settings.state_dir, create=False)
        except OSError as exc:  # one line, never a traceback: the mount, its owner or its mode is wrong
            return f"cannot read {exc.filename or settings.state_dir / ROOT_ID_FILE}: {exc.strerror}"
        except ValueError:
            return f"{settings.state_dir / ROOT_ID_FILE} is not a root identity: mount the supervisor's root there"
        if ours != published_root:
            return (
                f"{settings.root} is not the supervisor's root (its state/root-id differs, or is missing): "
                "mount the supervisor's root there"
            )
        return folder_problem(settings.state_dir / "originals", settings.state_dir / "results")

    def model(self, published_root: str, supervisor: dict) -> str | None:
        from bgremover.models.manifest import ModelError, find_model_spec

        name = supervisor.get("model")
        try:
            spec = find_model_spec(name, self.settings.models_folder, verify=False)
            digest = self.sha256(spec.path)
        except (ModelError, OSError) as exc:
            return f"the supervisor's model '{name}' cannot be used here: {one_line(exc)}"
        if digest != supervisor.get("sha256") or digest != spec.sha256:
            return f"model file {spec.path} is not the supervisor's model '{name}' (its sha256 differs)"
        return None

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self.hashed:
            digest = hashlib.sha256()
            with path.open("rb") as model:
                while chunk := model.read(1 << 20):
                    digest.update(chunk)
            self.hashed = {key: digest.hexdigest()}
        return self.hashed[key]


def folder_problem(originals: Path, results: Path) -> str | None:
    """The originals readable, and a file can be made and removed in the results (where the worker writes)."""
    try:
        os.listdir(originals)
    except OSError as exc:
        return f"cannot read {originals}: {exc.strerror}"
    probe = results / f".worker-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {results}: {exc.strerror}"
    return None


def missing_providers(wanted: tuple[str, ...]) -> str | None:
    """The providers this host's onnxruntime lacks, asked of a child (the worker itself never imports onnxruntime)."""
    done = subprocess.run([sys.executable, "-c", PROVIDERS_PROBE], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"onnxruntime cannot be loaded here: {(done.stderr.strip().splitlines() or ['no reason given'])[-1]}"
    available = json.loads(done.stdout)
    missing = [name for name in wanted if name not in available]
    if missing:
        return f"this host's onnxruntime lacks {', '.join(missing)} (it has {', '.join(available)})"
    return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
