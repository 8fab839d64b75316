"""A job as a task message: item id, attempt, spool-relative names and the options; never bytes, never a user's file name.

The spool names every file of an item by its id and attempt (queue/spool.py),
so the paths a message carries say nothing of what the user called the file.
They are relative to the root, which every worker host mounts: a worker puts
its own mount point in front.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

from bgremover.contract import JobSpec
from bgremover.options import ImageOptions

# The JobSpec fields that are files under the root. The models folders and OpenVINO's compile cache are
# the worker's own (WORKERS_OWN): they never travel, and the worker sets them from its settings.
PATH_FIELDS = ("input", "output", "report", "log", "mask", "matte", "renders", "loose", "alpha")
WORKERS_OWN = ("models_dir", "review_models_dir", "cache_dir", "checks_dir")
KEY_FIELDS = ("item", "attempt")  # the message's own fields, beside the spec, as earlier messages carry them
LIMITS = ("job_timeout_seconds", "job_memory_limit_mb", "kill_grace_seconds")
ROOT_ID_FILE = "root-id"  # in the state folder: which root this is, so a worker on another one is refused


def to_message(spec: JobSpec, root: Path, limits: dict) -> dict:
    fields = {}
    for spec_field in dataclasses.fields(spec):
        value = getattr(spec, spec_field.name)
        if spec_field.name in PATH_FIELDS and value is not None:
            value = str(Path(value).relative_to(root))
        elif spec_field.name in WORKERS_OWN or spec_field.name in KEY_FIELDS:
            continue
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, ImageOptions):
            value = dataclasses.asdict(value)
        fields[spec_field.name] = value
    limits = {name: limits[name] for name in LIMITS}
    return {"item": spec.item, "attempt": spec.attempt, "spec": fields, "limits": limits}


def spec_from(
    message: dict, root: Path, models_dir: Path, cache_dir: Path | None = None, checks_dir: Path | None = None
) -> JobSpec:
    """The JobSpec again, on a worker whose root is mounted at `root`; a name that leaves the root is refused.

    `models_dir`, `cache_dir` and `checks_dir` are the worker's own (WORKERS_OWN).
    """
    fields = dict(message["spec"])
    for name in PATH_FIELDS:
        if fields.get(name) is not None:
            path = root / fields[name]
            if root.resolve() not in path.resolve().parents:
                raise ValueError(f"the message's {name} is not under the root")
            # Passed on unresolved: each use looks it up through the mount point again, so a root lost
            # mid-job fails the job here (and the worker hands the task back), never writes elsewhere.
            fields[name] = path
    fields["providers"] = tuple(fields.get("providers") or ("CPUExecutionProvider",))
    fields["options"] = ImageOptions(**fields.get("options", {}))
    keys = {name: message.get(name) for name in KEY_FIELDS}
    # Both models from the worker's own models folder, which its fitness check holds to the supervisor's.
    own = {"models_dir": models_dir, "review_models_dir": models_dir, "cache_dir": cache_dir, "checks_dir": checks_dir}
    return JobSpec(**fields, **keys, **own)


def model_of(message: dict) -> str:
    """The model a message's job runs: the worker prepares it before the job starts."""
    return message["spec"]["options"]["model"]


def root_identity(state_dir: Path, create: bool) -> str | None:
    """This root's identity, made once by the supervisor; None where a worker finds none."""
    path = state_dir / ROOT_ID_FILE
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        if not create:
            return None
    state_dir.mkdir(parents=True, exist_ok=True)
    identity = uuid.uuid4().hex
    temporary = path.with_suffix(".tmp")
    temporary.write_text(identity, "ascii")
    temporary.rename(path)
    return identity
