"""A job as a Celery task message (runners/celery/message.py): what the supervisor sends is what a worker runs.

Celery carries the message as JSON, so the round trip here goes through JSON too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bgremover.contract import JobSpec
from bgremover.options import ImageOptions
from bgremover.runners.celery.message import model_of, spec_from, to_message

LIMITS = {"job_timeout_seconds": 60, "job_memory_limit_mb": 3072, "kill_grace_seconds": 5}


def spec_under(root: Path, **options) -> JobSpec:
    state = root / "state"
    return JobSpec(
        item=7,
        attempt=2,
        input=state / "originals" / "7.jpg",
        output=state / "results" / "7-2.webp",
        report=state / "results" / "7-2.report.json",
        options=ImageOptions(**options),
        log=state / "results" / "7-2.log",
        threads=2,
    )


def test_a_worker_with_the_root_elsewhere_runs_the_very_job_the_supervisor_sent(tmp_path):
    sent = spec_under(tmp_path / "here", model="isnet-medium", output_format="webp", edges="refine", quality=70)
    message = json.loads(json.dumps(to_message(sent, tmp_path / "here", LIMITS)))

    received = spec_from(message, tmp_path / "there", tmp_path / "models")

    assert (message["item"], message["attempt"]) == (7, 2)
    assert model_of(message) == "isnet-medium"
    assert received.options == sent.options
    assert (received.item, received.attempt) == (7, 2)
    assert received.input == tmp_path / "there" / "state" / "originals" / "7.jpg"
    assert received.models_dir == tmp_path / "models"


def test_a_message_naming_a_file_outside_the_root_is_refused(tmp_path):
    message = json.loads(json.dumps(to_message(spec_under(tmp_path), tmp_path, LIMITS)))
    message["spec"]["input"] = "../../etc/passwd"
    with pytest.raises(ValueError, match="not under the root"):
        spec_from(message, tmp_path, tmp_path / "models")


def test_the_supervisors_own_folders_stay_home_and_the_worker_gives_its_own(tmp_path):
    """The models folders and OpenVINO's compile cache are each host's: the message carries none of them."""
    here = tmp_path / "here"
    sent = dataclasses.replace(
        spec_under(here),
        models_dir=here / "models",
        review_models_dir=here / "models",
        cache_dir=here / "state" / "openvino",
        checks_dir=here / "models",
    )
    message = json.loads(json.dumps(to_message(sent, here, LIMITS)))  # a Path here would not go through JSON

    assert not {"models_dir", "review_models_dir", "cache_dir", "checks_dir"} & set(message["spec"])
    there = tmp_path / "there"
    received = spec_from(message, there, there / "models", there / "state" / "openvino", there / "models")
    assert (received.models_dir, received.review_models_dir) == (there / "models", there / "models")
    assert (received.cache_dir, received.checks_dir) == (there / "state" / "openvino", there / "models")
