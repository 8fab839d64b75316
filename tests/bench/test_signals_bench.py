"""`bgremover bench --signals`: the signals' precision and recall on the labelled set, as a user runs it."""

from __future__ import annotations

import json

from tests.support.cli import cli


def test_the_signals_bench_reports_each_signal_and_flags_no_good_photo(tmp_path):
    result = cli("bench", "--signals", "--json", "--root", tmp_path / "root")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)

    assert document["models"] == {"first": "u2netp", "second": None}
    groups = document["labelled_set"]
    assert set(groups) >= {"no subject", "one product", "cut by the frame", "2 products", "3 products",
                           "tiny subject", "hair and fur", "glass", "shipped photo"}  # fmt: skip
    for code in ("no_subject", "tiny_subject", "cut_by_frame", "several_subjects", "uncertain_edges"):
        row = document["signals"][code]
        assert row["labelled"] > 0 and set(row) == {"labelled", "raised", "precision", "recall"}, code
    assert document["checks"]["good_photos_flagged"] == []
    assert document["signals"]["no_subject"]["recall"] == 1.0
    right, _, total = document["checks"]["cut_sides_right"].partition(" of ")
    assert right == total != "0", "every cut it finds names the sides the subject runs off"
    assert "disagreement" not in document and "escalation" not in document, "no second model was asked for"
