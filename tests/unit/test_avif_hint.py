"""The sentence a Pillow without AVIF gets names a command that installs the plugin into bgremover's own Python.

The installed venv runs that very command in tests/packaging/test_install.py.
"""

from __future__ import annotations

import shlex
import sys
import tomllib

from bgremover.imaging import matting
from tests.conftest import REPO


def avif_extra() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]["avif"]


def test_the_plugin_the_hint_names_is_the_one_the_avif_extra_installs():
    (requirement,) = avif_extra()
    assert requirement.split(">=")[0].strip() == matting.AVIF_PLUGIN == "pillow-avif-plugin"


def test_the_hint_installs_with_the_interpreter_that_is_running():
    sentence = matting.avif_unavailable()
    assert sentence.startswith("this Pillow cannot write AVIF: ")
    assert sentence.endswith(f"({shlex.quote(sys.executable)} -m pip install pillow-avif-plugin)")
