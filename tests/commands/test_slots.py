"""job_slots: the rule that chooses how many jobs run at once, on made-up machines, and a bad value refused at start.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_slots.py.
"""

from __future__ import annotations

import pytest

from tests.support.cli import cli, one_error_line


@pytest.mark.parametrize("bad", ["0", "-1", "many", "2.5"])
@pytest.mark.parametrize("how", ["flag", "environment", "file"])
def test_a_bad_job_slots_stops_the_daemon_at_start_in_one_line_with_exit_code_2(tmp_path, bad, how):
    root = tmp_path / "root"
    args, env = ["run", "--root", root], {}
    if how == "flag":
        args += ["--job-slots", bad]
    elif how == "environment":
        env["BGREMOVER_JOB_SLOTS"] = bad
    else:
        (tmp_path / "bgremover.toml").write_text(f'job_slots = "{bad}"\n')
        args += ["--config", tmp_path / "bgremover.toml"]
    result = cli(*args, env=env)
    assert result.returncode == 2
    assert one_error_line(result) == (
        f"bgremover: bad setting 'job_slots': Value error, must be a whole number of "
        f"at least 1, or \"auto\" (got '{bad}')"
    )
    assert not root.exists(), "a refused daemon made its folders"
