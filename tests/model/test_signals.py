"""The quality signals with the bundled model on the labelled set: the good photos raise nothing, the rest what they show."""

from __future__ import annotations

import pytest

from bgremover.bench import signals as labelled
from bgremover.imaging import matting, quality


@pytest.fixture(scope="module")
def u2netp():
    spec = matting.find_model_spec("u2netp", None)
    return matting.create_session(spec, threads=1), spec


@pytest.fixture(scope="module")
def cases():
    return {case.name: case for case in labelled.labelled_set()}


def raised(case, model) -> list[dict]:
    return quality.signals(matting.signal_mask(matting.model_mask(case.image, *model)))


def test_the_good_photos_raise_no_flag(u2netp, cases):
    good = [case for case in cases.values() if case.group in ("one product", "shipped photo") and not case.expected]
    assert len(good) == 21, "twenty drawn products on plain and busy backgrounds, and the coffee cup"
    flagged = {case.name: raised(case, u2netp) for case in good}
    assert {name: signals for name, signals in flagged.items() if signals} == {}


def test_the_shipped_photos_cut_by_the_frame_say_on_which_sides(u2netp, cases):
    for name in ("astronaut", "chelsea"):
        [signal] = raised(cases[f"photo {name}"], u2netp)
        assert signal["code"] == "cut_by_frame"
        assert tuple(signal["sides"]) == labelled.PHOTO_CUTS[name]


def test_photos_with_nothing_on_them_are_flagged_as_empty(u2netp, cases):
    empty = [case for case in cases.values() if case.group == "no subject"]
    assert [[s["code"] for s in raised(case, u2netp)] for case in empty] == [["no_subject"]] * len(empty)


def test_products_cut_by_each_edge_and_several_products_are_flagged(u2netp, cases):
    for case in cases.values():
        if case.group == "cut by the frame":
            [signal] = raised(case, u2netp)
            assert signal["sides"] == labelled.cut_sides(case.truth), case.name
        if case.group == "2 products" and "coffee" not in case.name:
            assert [s["code"] for s in raised(case, u2netp)] == ["several_subjects"], case.name
