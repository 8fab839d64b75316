"""The documented service install, run as written, into a folder of the test's own instead of /opt/bgremover.

The commands are read out of the systemd section (docs/systemd.md), so the text a user
copies and the commands tested are the same: every line of that block naming
/opt/bgremover runs in a shell from the checkout, with /opt/bgremover swapped
for a temporary folder and `sudo` dropped. Nothing else is changed: the venv is
made fresh and `pip install .` builds the project and installs its
dependencies into it from the index (pip's own cache makes a second run quick).
Then the unit, with its ExecStart pointed at the same folder, must pass
`systemd-analyze verify`, which checks that the program it names exists and
is executable.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO
from tests.packaging.test_packaging import UNIT, systemd_analyze, unit_settings
from tests.support import docs

PREFIX = "/opt/bgremover"
SECTION = "Running it under systemd"
INSTALL_TIMEOUT = 600  # seconds for one command; building and installing takes about half a minute with a warm cache


def documented_block() -> list[str]:
    """The lines of the first ```sh block of the systemd section."""
    return docs.code_blocks(docs.section(SECTION))[0].lines


def without_comment(line: str) -> tuple[str, str]:
    """(command, comment) of one line of the block."""
    command, _, comment = line.partition(" #")
    return command.strip(), comment.strip()


def install_commands() -> list[str]:
    """The documented commands that make or use the venv, as a non-root shell runs them."""
    commands = [without_comment(line)[0] for line in documented_block() if PREFIX in line]
    return [command.removeprefix("sudo ") for command in commands]


def source_version() -> str:
    """__version__ as written in daemon/bgremover/version.py, the one place it is written."""
    text = (REPO / "daemon" / "bgremover" / "version.py").read_text()
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    return version


def shell(command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return docs.shell(command, cwd, timeout=INSTALL_TIMEOUT)


@dataclass
class Installed:
    prefix: Path  # where /opt/bgremover would be
    results: dict[str, subprocess.CompletedProcess]  # each documented command and what it did

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess:
        return shell(f"{shlex.quote(str(self.prefix / 'bin' / 'python'))} -c {shlex.quote(code)}", cwd=cwd)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    prefix = tmp_path_factory.mktemp("install") / "opt-bgremover"
    results = {}
    for command in install_commands():
        result = shell(command.replace(PREFIX, shlex.quote(str(prefix))))
        assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
        results[command] = result
    return Installed(prefix, results)


def test_the_readme_installs_the_service_into_a_venv_of_its_own_where_the_unit_looks():
    commands = install_commands()
    assert commands[0] == f"python3 -m venv {PREFIX}"
    assert f"{PREFIX}/bin/pip install ." in commands
    assert commands[-1] == f"{PREFIX}/bin/bgremover --version"
    block = [without_comment(line)[0] for line in documented_block()]
    assert not [line for line in block if re.search(r"(^|\s)pip3?\s", line)], "every pip must be the venv's"
    assert "sudo systemd-analyze verify /etc/systemd/system/bgremover.service" in block
    assert unit_settings()["ExecStart"].split()[0] == f"{PREFIX}/bin/bgremover"


def test_the_documented_commands_install_bgremover_into_the_venv_and_it_reports_its_version(installed, tmp_path):
    where = installed.python(
        "import bgremover, importlib.metadata as m; print(bgremover.__file__); print(m.version('bgremover'))",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    module_file, distribution_version = where.stdout.splitlines()
    assert Path(module_file).is_relative_to(installed.prefix), "bgremover must come from the venv, not the checkout"

    version_command = f"{PREFIX}/bin/bgremover --version"
    assert installed.results[version_command].stdout == f"bgremover {distribution_version}\n"
    assert distribution_version == source_version()
    (comment,) = [without_comment(line)[1] for line in documented_block() if version_command in line]
    assert comment == f"bgremover {source_version()}", "the systemd page shows what --version prints"


def unit_at(prefix: Path, folder: Path) -> Path:
    """A copy of the unit whose ExecStart runs bgremover from `prefix` instead of /opt/bgremover."""
    text = UNIT.read_text()
    execstart = f"\nExecStart={PREFIX}/bin/bgremover "
    assert text.count(execstart) == 1
    copy = folder / "bgremover.service"
    copy.write_text(text.replace(execstart, f"\nExecStart={prefix}/bin/bgremover "))
    return copy


def test_the_unit_verifies_against_the_bgremover_the_commands_installed(installed, tmp_path):
    verified = subprocess.run(
        [systemd_analyze(), "verify", unit_at(installed.prefix, tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (verified.returncode, verified.stderr, verified.stdout) == (0, "", "")


def test_systemd_analyze_verify_refuses_the_unit_where_nothing_is_installed(tmp_path):
    # What makes the test above mean something: verify does look for the program.
    nowhere = tmp_path / "not-installed"
    refused = subprocess.run(
        [systemd_analyze(), "verify", unit_at(nowhere, tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert f"{nowhere}/bin/bgremover is not executable" in refused.stderr, refused.stderr


def test_the_avif_hint_installs_the_plugin_of_the_avif_extra_into_the_venv(installed, tmp_path):
    metadata = installed.python(
        "import importlib.metadata as m, json; d = m.metadata('bgremover'); "
        "print(json.dumps([d.get_all('Provides-Extra'), m.requires('bgremover')]))",
        cwd=tmp_path,
    )
    assert metadata.returncode == 0, metadata.stderr
    extras, requires = json.loads(metadata.stdout)
    assert "avif" in extras
    requirements = [Requirement(line) for line in requires]
    for_avif = [r for r in requirements if r.marker and r.marker.evaluate({"extra": "avif"})]
    assert [(r.name, str(r.specifier)) for r in for_avif] == [("pillow-avif-plugin", ">=1.4")]

    hint = installed.python(
        "from bgremover.imaging.matting import avif_unavailable; print(avif_unavailable())", cwd=tmp_path
    )
    assert hint.returncode == 0, hint.stderr
    command = hint.stdout.strip().rsplit("(", 1)[1].removesuffix(")")
    assert command == f"{shlex.quote(str(installed.prefix / 'bin' / 'python'))} -m pip install pillow-avif-plugin"
    done = shell(command, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    imported = installed.python("import pillow_avif", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
