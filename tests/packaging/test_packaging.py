"""What ships: the wheel with its model, the systemd unit, the example config, the two make targets.

The wheel is built and installed for real (pip, hatchling through build isolation)
and run from an unrelated folder; the unit is checked by systemd's own tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PHOTOS, REPO
from tests.support import docs

SYSTEMD_ANALYZE = "systemd-analyze"
UNIT = REPO / "systemd" / "bgremover.service"
MAX_EXPOSURE = 2.0


def run(*args: str | Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*map(str, args)],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def installed_env(site: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    env["PYTHONPATH"] = str(site)
    return env


# ---------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("bgremover-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_carries_the_model_its_manifest_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("bgremover/models/bundled/u2netp.onnx") == (REPO / "models" / "u2netp.onnx").read_bytes()
        assert (
            archive.read("bgremover/models/bundled/manifest.json") == (REPO / "models" / "manifest.json").read_bytes()
        )
        # The bench's corpus sources, and the hand-checked mask its edge measurement judges the coffee photo by.
        for photo in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "masks/coffee.png", "LICENSE.md"):
            assert archive.read(f"bgremover/bench/photos/{photo}") == (PHOTOS / photo).read_bytes()
    package = REPO / "daemon"
    modules = {path.relative_to(package).as_posix() for path in (package / "bgremover").rglob("*.py")}
    assert {"bgremover/__main__.py", "bgremover/main.py", "bgremover/imaging/matting.py"} <= modules
    assert modules - names == set(), "modules missing from the wheel"
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "bgremover = bgremover.main:main" in archive.read(entry_points).decode()


def test_the_installed_wheel_removes_a_background_from_any_folder(wheel, tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--no-compile", "--target", site, wheel
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env = installed_env(site)

    where = run(
        sys.executable,
        "-c",
        "import bgremover, bgremover.imaging.matting as m; print(bgremover.__file__); print(m.models_dir())",
        cwd=elsewhere,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    module_file, models = map(Path, where.stdout.splitlines())
    assert module_file == site / "bgremover" / "__init__.py", "bgremover must come from the installed wheel"
    assert models == site / "bgremover" / "models" / "bundled", "the model must come from the installed package"

    shutil.copy(PHOTOS / "astronaut.jpg", elsewhere / "astronaut.jpg")
    removed = run(sys.executable, "-m", "bgremover", "remove", "astronaut.jpg", "out.png", cwd=elsewhere, env=env)
    assert removed.returncode == 0, removed.stderr
    with Image.open(elsewhere / "astronaut.jpg") as original, Image.open(elsewhere / "out.png") as cutout:
        assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", original.size)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["astronaut.jpg", "out.png"]


# ---------------------------------------------------------------- the systemd unit


def systemd_analyze() -> str:
    found = shutil.which(SYSTEMD_ANALYZE)
    if found is None:
        pytest.fail(
            "systemd-analyze is not installed; it checks the unit file: "
            "install the Debian package 'systemd' (apt-get install systemd)"
        )
    return found


def unit_lines() -> list[str]:
    return [
        line.strip()
        for line in UNIT.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", ";"))
    ]


def runnable_copy(unit: Path, tmp_path: Path, command: str) -> Path:
    """`unit` with ExecStart's /opt/bgremover/bin/bgremover swapped for an executable that exists here.

    `command` is the bgremover command ExecStart must run (run, web, worker).
    """
    program = tmp_path / "bin" / "bgremover"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    text = unit.read_text()
    assert f"ExecStart=/opt/bgremover/bin/bgremover {command} " in text
    copy = tmp_path / "unit" / unit.name
    copy.parent.mkdir()
    copy.write_text(text.replace("ExecStart=/opt/bgremover/bin/bgremover ", f"ExecStart={program} "))
    return copy


def exposure_of(copy: Path) -> float:
    """systemd-analyze security's overall exposure level for the unit file `copy`."""
    result = run(
        systemd_analyze(), "security", "--offline=true", "--no-pager", copy, env={**os.environ, "SYSTEMD_COLORS": "0"}
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout[-2000:]
    return float(found.group(1))


def every_value(unit: Path) -> dict[str, list[str]]:
    """Each setting's values, in order, as written in `unit`."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.strip().split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    return runnable_copy(UNIT, tmp_path, "run")


def unit_settings() -> dict[str, str]:
    """Each setting's last value, as systemd reads a setting given twice."""
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit_lines() if "=" in line}


def test_the_unit_runs_the_daemon_on_its_state_directory_with_the_hardening_the_contract_requires():
    lines, settings = unit_lines(), unit_settings()
    assert settings["ExecStart"] == "/opt/bgremover/bin/bgremover run --root /var/lib/bgremover"
    assert settings.get("StateDirectory") == "bgremover", "the root must be the service's StateDirectory"
    assert settings.get("KillSignal", "SIGTERM") == "SIGTERM"
    for hardening in (
        "User=bgremover",
        "Group=bgremover",
        "UMask=0007",
        "StateDirectoryMode=2770",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "SystemCallFilter=@system-service",
    ):
        assert hardening in lines, hardening
    assert "MemoryMax" in settings
    assert "DynamicUser" not in settings, "the fixed user the web page and the workers share"


def test_the_unit_waits_for_ready_and_restarts_a_daemon_that_stops_pinging_the_watchdog():
    settings = unit_settings()
    assert settings["Type"] == "notify", "READY=1 once the start-up scan is done"
    assert settings["NotifyAccess"] == "main", "only the supervisor speaks for the service, never a job"
    # The loop pings every half of WatchdogSec and wakes at least once a second; one
    # slow pass (a big session's ZIP) must not look like a wedged loop.
    assert re.fullmatch(r"\d+", settings["WatchdogSec"]) and 30 <= int(settings["WatchdogSec"]) <= 300
    assert settings["Restart"] in ("on-failure", "on-watchdog", "always"), "a watchdog kill must restart it"


def test_the_docs_show_how_to_install_enable_and_share_the_unit():
    section = docs.section("Running it under systemd")
    for step in (
        "cp systemd/bgremover.service /etc/systemd/system/",
        "systemctl daemon-reload",
        "systemctl enable --now bgremover",
        "/var/lib/bgremover/inbox",
        "/var/lib/bgremover/outbox",
        "ReadWritePaths=",
        "--root",
    ):
        assert step in section, step


def test_the_unit_passes_systemd_analyze_verify(unit_copy):
    result = run(systemd_analyze(), "verify", unit_copy)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_the_unit_exposure_is_low(unit_copy):
    exposure = exposure_of(unit_copy)
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}"


# ---------------------------------------------------------------- the web page's unit

WEB_UNIT = REPO / "systemd" / "bgremover-web.service"


@pytest.fixture
def web_unit_copy(tmp_path) -> Path:
    return runnable_copy(WEB_UNIT, tmp_path, "web")


def test_the_web_unit_shares_the_daemons_user_and_folder_and_writes_only_where_a_user_acts():
    settings = every_value(WEB_UNIT)
    assert settings["ExecStart"] == ["/opt/bgremover/bin/bgremover web --root /var/lib/bgremover"]
    daemon = every_value(UNIT)
    for shared in ("User", "Group", "UMask", "StateDirectoryMode", "WorkingDirectory"):
        assert settings[shared] == daemon[shared], f"the daemon's {shared}"
    assert settings["User"] == settings["Group"] == ["bgremover"] and "DynamicUser" not in settings
    assert "bgremover" in settings["StateDirectory"][0].split()
    read_only = " ".join(settings["ReadOnlyPaths"]).split()
    for folder in ("outbox", "archive", "state/originals", "state/results", "state/bgremover.sqlite3"):
        assert f"-/var/lib/bgremover/{folder}" in read_only, folder
    assert not any(p.lstrip("-").endswith(("/inbox", "/retry", "/cancel", "/web")) for p in read_only)
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert settings[hardening] in (["yes"], ["strict"]), hardening
    assert settings["IPAddressDeny"] == ["any"] and settings["IPAddressAllow"] == ["localhost"]


def test_the_web_unit_passes_systemd_analyze_verify(web_unit_copy):
    result = run(systemd_analyze(), "verify", web_unit_copy)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_the_web_unit_exposure_is_low(web_unit_copy):
    assert exposure_of(web_unit_copy) <= MAX_EXPOSURE


# ---------------------------------------------------------------- a worker host's unit

WORKER_UNIT = REPO / "systemd" / "bgremover-worker.service"


@pytest.fixture
def worker_unit_copy(tmp_path) -> Path:
    return runnable_copy(WORKER_UNIT, tmp_path, "worker")


def test_the_worker_unit_runs_the_worker_on_the_shared_root_writing_only_results():
    settings = every_value(WORKER_UNIT)
    assert settings["ExecStart"] == [
        "/opt/bgremover/bin/bgremover worker --root /srv/bgremover --slots ${WORKER_SLOTS}"
    ]
    assert settings["RequiresMountsFor"] == ["/srv/bgremover"]
    assert settings["User"] == ["bgremover"] and "DynamicUser" not in settings, "one uid on every host of the share"
    daemon = every_value(UNIT)
    for shared in ("User", "Group", "UMask"):
        assert settings[shared] == daemon[shared], f"the daemon's {shared}"
    assert settings["ReadOnlyPaths"] == ["/srv/bgremover"]
    assert settings["ReadWritePaths"] == ["-/srv/bgremover/state/results"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert settings[hardening] in (["yes"], ["strict"]), hardening
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"], "the broker is on the network"


def test_the_worker_unit_reads_the_brokers_url_from_a_credential_never_from_its_text_or_command_line():
    settings = every_value(WORKER_UNIT)
    assert settings["LoadCredential"] == ["broker-url:/etc/bgremover/broker-url"]
    assert "BGREMOVER_BROKER_URL_FILE=%d/broker-url" in settings["Environment"]
    assert "--broker" not in settings["ExecStart"][0]
    assert not [line for line in WORKER_UNIT.read_text().splitlines() if "BGREMOVER_BROKER_URL=" in line]


def test_the_worker_unit_passes_systemd_analyze_verify(worker_unit_copy):
    result = run(systemd_analyze(), "verify", worker_unit_copy)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_the_worker_unit_exposure_is_low(worker_unit_copy):
    assert exposure_of(worker_unit_copy) <= MAX_EXPOSURE


# ---------------------------------------------------------------- config, make, CI, README


def test_the_example_config_parses_and_documents_the_defaults(monkeypatch, tmp_path):
    from bgremover.settings import load_settings

    for key in [k for k in os.environ if k.startswith("BGREMOVER_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # both roots are ./data, made absolute against the same folder
    example, defaults = load_settings(REPO / "config" / "bgremover.toml"), load_settings()
    assert example.model_dump() == defaults.model_dump()
    # Every setting a user may change is written in the file (job_module is for tests only);
    # threads, whose default depends on the machine, and the settings that are off unless
    # set (TOML cannot write None) are shown commented out.
    text = (REPO / "config" / "bgremover.toml").read_text()
    documented = set(re.findall(r"^#? ?(\w+) =", text, re.MULTILINE))
    assert documented == set(type(defaults).model_fields) - {"job_module"}


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", (REPO / "Makefile").read_text(), re.MULTILINE))


def test_make_has_run_and_test_targets_and_ci_calls_make_test():
    assert {"run", "test"} <= make_targets()
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\s*$", ci, re.MULTILINE), ci
    assert os.access(REPO / ".ci" / "run", os.X_OK), ".ci/run must be executable"
    dry = run("make", "-n", "-C", REPO, "run", "test")
    assert dry.returncode == 0, dry.stderr
    assert "bgremover run" in dry.stdout and "pytest" in dry.stdout


def test_readme_gives_make_run_and_make_test():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text()
    assert "make run" in text and "make test" in text


# ---------------------------------------------------------------- the supervisor of worker hosts

CELERY_DROP_IN = REPO / "systemd" / "bgremover.service.d" / "celery.conf"


@pytest.fixture
def unit_with_celery_drop_in(tmp_path) -> Path:
    """The unit and the celery drop-in beside it, both running an executable that exists here."""
    copy = runnable_copy(UNIT, tmp_path, "run")
    drop_in = copy.parent / "bgremover.service.d" / CELERY_DROP_IN.name
    drop_in.parent.mkdir()
    program = tmp_path / "bin" / "bgremover"
    drop_in.write_text(
        CELERY_DROP_IN.read_text().replace("ExecStart=/opt/bgremover/bin/bgremover ", f"ExecStart={program} ")
    )
    return copy


def test_the_celery_drop_in_passes_verify_runs_as_the_fixed_user_and_keeps_exposure_low(unit_with_celery_drop_in):
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_with_celery_drop_in.parent}:", "SYSTEMD_COLORS": "0"}
    verified = run(systemd_analyze(), "verify", unit_with_celery_drop_in, env=env)
    security = run(systemd_analyze(), "security", "--offline=true", "--no-pager", unit_with_celery_drop_in, env=env)
    assert (verified.returncode, verified.stderr, verified.stdout) == (0, "", "")
    assert "Service runs under a static non-root user identity" in security.stdout  # the drop-in was read
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", security.stdout)
    assert found and float(found.group(1)) <= MAX_EXPOSURE, security.stdout[-2000:]
