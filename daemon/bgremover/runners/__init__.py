"""Ways of running jobs, by the name the `runner` setting gives.

Each is one class in one file of this folder, implementing runners.api.JobRunner,
constructed as `Runner(settings, wake)` (wake: a callable that tells the
supervisor's loop a job has ended). Named in the table of runnertable.py as
"module:Class" and imported only when chosen, so a runner's dependencies cost
nothing to the others.
"""

from __future__ import annotations

import importlib

from bgremover.runnertable import RUNNERS

__all__ = ["RUNNERS", "runner_class"]


def runner_class(name: str) -> type:
    """The JobRunner class the table names `name`; a RunnerError, in one sentence, if its packages are missing."""
    from bgremover.runners.api import RunnerError

    module, _, cls = RUNNERS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        extra = " (pip install 'bgremover[cluster]')" if name == "celery" else ""
        raise RunnerError(f"the {name} runner needs {exc.name or exc}, which is not installed{extra}") from None
