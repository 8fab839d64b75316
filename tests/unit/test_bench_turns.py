"""The daemon beside rembg: runs taken in turns, and the ratio of their medians (bench/catalog.py)."""

from __future__ import annotations

from bgremover.bench.catalog import alternated


def test_the_runs_take_turns_and_the_ratio_is_of_the_medians():
    order = []

    def again(index: int) -> tuple[float, float]:
        order.append(index)
        return {2: (2.0, 1.4), 3: (2.6, 1.2)}[index]

    turns = alternated((2.8, 1.3), again, 3)
    assert order == [2, 3]  # each later pair once, in order, after the first
    assert turns["default_images_per_s_runs"] == [2.8, 2.0, 2.6]
    assert turns["rembg_images_per_s_runs"] == [1.3, 1.4, 1.2]
    assert (turns["default_images_per_s_median"], turns["rembg_images_per_s_median"]) == (2.6, 1.3)
    # One pair alone would have said 2.15, 1.43 or 2.17; the medians say 2.0.
    assert turns["default_over_rembg_ratios"] == [2.15, 1.43, 2.17]
    assert turns["default_over_rembg_ratio"] == 2.0


def test_one_run_each_is_that_pair_alone():
    def again(index: int) -> tuple[float, float]:
        raise AssertionError("no second run was asked for")

    turns = alternated((1.65, 0.78), again, 1)
    assert turns["default_images_per_s_runs"] == [1.65]
    assert turns["default_over_rembg_ratio"] == 2.12
