"""`bgremover bench`: the corpus it makes and the numbers it reports, from real runs.

The runs here are small (three 480×360 images, a soak of four) and go through
the real model and the real daemon; no test asserts how fast anything is, only
that every number is there, is positive, and counts what was really done.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bgremover.bench import daemon as benchdaemon
from bgremover.bench import main as bench
from bgremover.bench import options as optionbench
from bgremover.bench.arguments import add_bench_arguments
from bgremover.settings import Settings, load_settings
from tests.support.images import shape_on_texture

SECTIONS = [
    "machine",
    "corpus",
    "model",
    "in_process",
    "encoders",
    "api",
    "daemon",
    "isolation",
    "ratios",
    "memory",
    "enqueue_latency",
]
TIMED_SECTIONS = ("model", "in_process", "encoders", "api", "daemon", "isolation", "enqueue_latency")
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bgremover bench")
    add_bench_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def no_user_settings(monkeypatch) -> None:
    # The bench hands the user's BGREMOVER_* settings on to its daemon:
    # a test must not inherit a developer's.
    for name in list(os.environ):
        if name.startswith("BGREMOVER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path, no_user_settings) -> Settings:
    return load_settings(root=tmp_path / "unused-root")


def timings(values: dict, where: str = ""):
    """Every (name, value) whose key says it is a duration (`_ms`, `_s`), at any depth."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from timings(value, f"{where}{key}.")
        elif key.endswith(("_ms", "_s")):
            yield where + key, value


def assert_positive_timings(document: dict, sections) -> None:
    found = []
    for section in sections:
        found += timings(document[section], f"{section}.")
    assert found, "no timings at all"
    for name, value in found:
        assert isinstance(value, (int, float)) and value > 0, f"{name} = {value!r}"


# ---------------------------------------------------------------- the corpus


def test_the_corpus_is_made_from_the_committed_photos():
    names = [path.name for path in bench.photo_sources()]
    assert names == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]


def contents(paths: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]


def test_the_same_arguments_give_the_same_bytes_at_the_requested_size(tmp_path):
    first = bench.make_corpus(tmp_path / "first", 4, (480, 360))
    again = bench.make_corpus(tmp_path / "again", 4, (480, 360))
    reseeded = bench.make_corpus(tmp_path / "reseeded", 4, (480, 360), seed=1)

    assert [path.name for path in first] == [f"photo-00{n}.jpg" for n in range(4)]
    assert contents(first) == contents(again)
    # Four variations, not one photo four times; another seed, other variations.
    assert len(set(contents(first))) == 4
    assert contents(reseeded) != contents(first)
    for path in first:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (480, 360))


def test_an_image_does_not_depend_on_how_many_are_made(tmp_path):
    two = bench.make_corpus(tmp_path / "two", 2, (320, 240))
    five = bench.make_corpus(tmp_path / "five", 5, (320, 240))
    assert contents(two) == contents(five[:2])


def test_an_images_folder_supplies_its_images_sorted_and_they_are_described(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    small, _ = shape_on_texture((320, 240))
    large, _ = shape_on_texture((640, 480))
    large.save(folder / "b.png")
    small.save(folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    # Names the daemon would ignore are left out of the corpus too.
    small.save(folder / ".hidden.jpg", "JPEG")
    small.save(folder / "upload.jpg.part", "JPEG")

    args = parse("--images", str(folder))
    corpus = bench.bench_corpus(args, tmp_path / "unused")

    assert [path.name for path in corpus] == ["a.jpg", "b.png"]
    described = bench.describe_corpus(corpus, args)
    assert (described["source"], described["count"]) == (str(folder), 2)
    assert described["sizes"] == {"320x240": 1, "640x480": 1}
    assert described["file_kb"] > 0
    first_only = parse("--images", str(folder), "--count", "1")
    assert [path.name for path in bench.bench_corpus(first_only, tmp_path)] == ["a.jpg"]


def test_a_folder_without_images_fails_in_one_sentence(tmp_path, settings, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench.main(settings, parse("--images", str(empty), "--json")) == 1
    captured = capsys.readouterr()
    assert captured.err == f"bgremover: --images {empty} holds no image files\n"
    assert captured.out == ""


def test_repeat_without_models_fails_in_one_sentence_and_runs_nothing(tmp_path, settings, capsys):
    kept = tmp_path / "kept"
    assert bench.main(settings, parse("--repeat", "2", "--keep", str(kept))) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "bgremover: --repeat counts the runs of --models: add --models NAME,NAME,... or leave --repeat out\n"
    )
    assert captured.out == ""
    assert list(kept.iterdir()) == []  # no corpus made, no daemon started


def test_the_arguments_and_their_defaults():
    defaults = vars(parse())
    assert defaults == {
        "images": None,
        "size": None,  # 2000x1500, or 320x240 for a soak
        "count": None,  # 40, or every image of --images
        "format": None,  # the output_format setting
        "json": False,
        "soak": None,
        "options": False,
        "edges": False,
        "model": None,
        "models": None,  # no model-and-path comparison
        "repeat": None,  # with --models: 3 runs of the default path and of rembg each
        "rerender": False,
        "signals": False,
        "keep": None,
        "slots": None,  # no slot sweep: the plain bench
        "workers": None,  # no run through celery workers
        "broker": None,  # the broker_url setting, for --workers
    }
    args = parse("--size", "800x600", "--count", "6", "--format", "webp", "--soak", "4")
    assert (args.size, args.count, args.format, args.soak) == ((800, 600), 6, "webp", 4)
    assert parse("--keep", "/tmp/k").keep == Path("/tmp/k")
    assert parse("--slots", "1, 2,AUTO").slots == ["1", "2", "auto"]
    for bad in (
        "--size=big",
        "--size=0x10",
        "--count=0",
        "--format=gif",
        "--slots=0",
        "--slots=1,many",
        "--slots=2,2",
        "--slots=",
        "--repeat=0",
    ):
        with pytest.raises(SystemExit):
            parse(bad)


# ---------------------------------------------------------------- a real bench


def test_a_small_bench_reports_every_section_and_the_work(tmp_path, settings, capsys):
    keep = tmp_path / "kept"
    args = parse("--count", "3", "--size", "480x360", "--json", "--keep", str(keep))

    assert bench.main(settings, args) == 0
    document = json.loads(capsys.readouterr().out)

    assert list(document) == SECTIONS
    assert_positive_timings(document, TIMED_SECTIONS)
    corpus, machine = document["corpus"], document["machine"]
    assert (corpus["count"], corpus["sizes"]) == (3, {"480x360": 3})
    assert machine["usable_cores"] >= 1
    assert "CPUExecutionProvider" in machine["providers"]
    assert document["in_process"]["images"] == 3
    assert all(f"{stage}_ms" in document["in_process"] for stage in STAGES)
    # WebP and AVIF depend on how Pillow was built; PNG is always there.
    assert document["encoders"]["png"]["available"] is True
    api = document["api"]
    assert api["images"] == bench.PROBES and api["session_load_ms"] > 0
    assert api["one_shot_over_reused_ratio"] == round(api["one_shot_ms"] / api["reused_ms"], 2)

    daemon = document["daemon"]
    assert (daemon["format"], daemon["images"]) == ("png", 3)
    assert (daemon["done"], daemon["failed"], daemon["zip_members"]) == (3, 0, 3)
    with zipfile.ZipFile(keep / "root" / "outbox" / "bench.zip") as archive:
        assert sorted(archive.namelist()) == [f"photo-00{n}.png" for n in range(3)]

    isolation = document["isolation"]
    assert isolation["jobs"] == 3 and 0 <= isolation["ready_before_its_job"] <= 3
    assert isolation["process_start_ms"] >= isolation["session_create_ms"] > 0
    assert all(isinstance(value, (int, float)) for value in document["ratios"].values())
    memory = document["memory"]
    assert memory["job_peak_rss_mb_max"] > 0 and memory["supervisor_hwm_mb"] > 0
    assert memory["supervisor_rss_mb_samples"]
    assert all(value > 0 for value in memory["supervisor_rss_mb_samples"])
    latency = document["enqueue_latency"]
    assert latency["probes"] == bench.PROBES
    assert latency["stable_seconds"] == benchdaemon.BENCH_STABLE_SECONDS
    # A file is taken only once it has held still for stable_seconds.
    assert latency["max_ms"] >= latency["median_ms"] >= latency["stable_seconds"] * 1000

    table = bench.render_table(document)
    titles = [
        "machine",
        "corpus",
        "model",
        "in-process stages",
        "encoders",
        "the Python API's session, reused against one-shot calls",
        "daemon",
    ]
    for title in [*titles, "ratios", "memory", "enqueue latency"]:
        assert f"\n{title}\n" in f"\n{table}"


# ---------------------------------------------------------------- soak


def test_a_soak_samples_supervisor_memory_every_step_and_at_the_end(settings, capsys):
    assert bench.main(settings, parse("--soak", "4", "--json"), soak_step=2) == 0
    # In JSON mode the document is all that reaches stdout.
    document = json.loads(capsys.readouterr().out)

    assert list(document) == ["machine", "soak"]
    soak = document["soak"]
    assert (soak["images"], soak["size"]) == (4, "320x240")
    assert (soak["done"], soak["failed"]) == (4, 0)
    samples = soak["samples"]
    # Every 2 finished items, then once more at the end.
    assert [sample["items"] for sample in samples] == [2, 4, 4]
    rss = [sample["rss_mb"] for sample in samples]
    assert all(value > 0 for value in rss)
    assert soak["supervisor_hwm_mb"] >= max(rss)
    assert soak["spread_mb"] == pytest.approx(rss[-1] - rss[0])
    assert soak["elapsed_s"] > 0 and soak["images_per_s"] > 0
    assert soak["job_peak_rss_mb_max"] > 0


def test_a_soak_table_gets_a_line_as_each_step_finishes(settings, capsys):
    # One slot, so the two items finish one after the other: with two, both
    # could finish between two looks at the log and make a single step of two.
    settings = settings.model_copy(update={"job_slots": 1})
    args = parse("--soak", "2", "--size", "160x120")
    assert bench.main(settings, args, soak_step=1) == 0
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("soak: ")]
    assert [line.split(" items")[0] for line in progress] == ["soak: 1", "soak: 2"]
    assert out.index(progress[-1]) < out.index("\nsoak\n")  # streamed before the table
    assert "supervisor_hwm_mb" in out


# ---------------------------------------------------------------- failure


def test_a_daemon_that_cannot_start_fails_in_one_sentence_naming_its_log(tmp_path, no_user_settings, capsys):
    settings = load_settings(root=tmp_path / "unused-root", model="no-such-model")
    keep = tmp_path / "kept"
    assert bench.main(settings, parse("--soak", "1", "--keep", str(keep))) == 1
    log = keep / "daemon.log"
    assert capsys.readouterr().err == (
        f"bgremover: the daemon exited with code 2 before it could get ready; its log is {log}\n"
    )
    assert "no-such-model" in log.read_text()


# ---------------------------------------------------------------- --options


def test_options_times_every_variant_and_measures_what_edges_change(tmp_path, settings, capsys):
    code = bench.main(settings, parse("--options", "--size", "320x240", "--count", "2", "--json"))
    assert code == 0, capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["machine", "corpus", "options", "recipes", "edges"]
    variants = document["options"]["variants"]
    assert list(variants) == list(optionbench.VARIANTS)
    assert variants["cutout png (baseline)"]["extra_ms"] == 0
    for name, numbers in variants.items():
        assert numbers["ms_per_image"] > 0, name
        assert numbers["extra_ms"] == round(
            numbers["ms_per_image"] - variants["cutout png (baseline)"]["ms_per_image"], 1
        )
    assert variants["output mask"]["output_kb"] is None and variants["background white, jpeg"]["output_kb"] > 0

    clean, refine = document["edges"]["clean"], document["edges"]["refine"]
    # refine only ever touches the band around the contour; clean may also drop specks elsewhere.
    assert refine["outside_mean_change"] == 0 and refine["outside_changed_percent"] == 0
    assert 0 < refine["band_pixels_percent"] < 100
    assert refine["band_mean_change"] > 0 and clean["band_mean_change"] > 0


# ---------------------------------------------------------------- --slots


def test_slots_runs_the_daemon_at_each_count_on_the_same_images_beside_the_in_process_loop(tmp_path, settings, capsys):
    code = bench.main(settings, parse("--slots", "1,2", "--size", "320x240", "--count", "4", "--json"))
    assert code == 0, capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["machine", "corpus", "in_process", "slots"]
    slots = document["slots"]
    assert list(slots["runs"]) == ["1", "2"] and slots["best"] in ("1", "2")
    assert slots["in_process_images_per_s"] == document["in_process"]["images_per_s"] > 0
    for label, run in slots["runs"].items():
        assert run["job_slots"] == int(label) and (run["done"], run["failed"]) == (4, 0)
        assert run["threads_per_job"] == max(1, document["machine"]["usable_cores"] // int(label))
        assert run["images_per_s"] > 0 and run["over_in_process_ratio"] == round(
            run["images_per_s"] / document["in_process"]["images_per_s"], 2
        )
        assert all(f"{stage}_ms" in run["job_stages"] for stage in STAGES)
        assert run["in_job_ms"] > 0 and run["isolation_overhead_ms"] >= 0
        memory = run["memory"]
        assert memory["supervisor_hwm_mb"] > 0 and memory["job_peak_rss_mb_max"] > 0
        # Sampled while the jobs ran: at least one job's worth, at most every slot's peak together.
        assert 0 < memory["jobs_rss_mb_sum_max"] <= run["job_slots"] * memory["job_peak_rss_mb_max"] * 1.05
    assert slots["runs"]["1"]["over_1_slot_ratio"] == 1.0
    assert "the daemon at each slot count" in bench.render_table(document)


# ---------------------------------------------------------------- --edges


def test_edges_measures_every_mode_with_and_without_decontamination_on_the_composites(settings, capsys):
    code = bench.main(settings, parse("--edges", "--json"))
    assert code == 0, capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["machine", "composites", "u2netp", "isnet-small"]
    assert document["isnet-small"] == {"skipped": "not installed (bgremover models fetch isnet-small)"}
    found = document["u2netp"]
    assert found["composites"] == 12
    for mode in ("raw", "clean", "refine"):
        off, on = found[f"{mode}, decontaminate off"], found[f"{mode}, decontaminate on"]
        assert {key: off[key] for key in off if key != "white_error"} == {
            key: on[key] for key in on if key != "white_error"
        }
        assert on["white_error"] < off["white_error"], mode
    # refine lowers the band error against raw on at least 80 % of the composites, and on the mean.
    assert found["refine lowers band MAE, % of composites"] >= 80
    assert found["refine, decontaminate off"]["band_mae"] < found["raw, decontaminate off"]["band_mae"]
    # Beside them, the real photos: the coffee photo against its hand-checked mask, and composites of its cup and
    # of the cat's fur over the five other backgrounds.
    real = found["real photos"]
    assert {group: errors["references"] for group, errors in real.items()} == {
        "real photo": 1,
        "coffee cup composites": 5,
        "cat fur composites": 5,
    }
    for errors in real.values():
        assert errors["band MAE, refine"] < errors["band MAE, raw"], errors
    assert "real photos" in bench.render_table(document)


def test_edges_on_bench_is_the_measurement_and_takes_no_value(tmp_path):
    from tests.support.cli import cli

    result = cli("bench", "--edges", "clean")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "bgremover: error: unrecognized arguments: clean"
    assert "--edges" in cli("bench", "--help").stdout
