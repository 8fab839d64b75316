"""Job tickets: a bgremover.toml in a dropped folder sets that folder's output, or refuses the folder with a reason."""

from __future__ import annotations

import pytest

from bgremover.intake.tickets import TICKET_NAME, TicketError, read_ticket, validated


def test_a_folder_without_a_ticket_has_none(tmp_path):
    assert read_ticket(tmp_path) is None


def test_a_ticket_sets_output_settings_checked_like_the_daemons_own(tmp_path):
    (tmp_path / TICKET_NAME).write_text('output_format = "webp"\nquality = 60\n')
    assert read_ticket(tmp_path) == {"output_format": "webp", "quality": 60}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "quality = 500",
            "the job ticket bgremover.toml is invalid: bad setting 'quality': "
            "Input should be less than or equal to 100 (got 500)",
        ),
        (
            'output_format = "gif"',
            "the job ticket bgremover.toml is invalid: bad setting 'output_format': "
            "Input should be 'png', 'webp', 'avif' or 'jpeg' (got 'gif')",
        ),
        (
            "threads = 64",
            "the job ticket bgremover.toml sets 'threads', which a ticket cannot set; "
            "it may set output_format, background, output, crop, margin, fill, size, edges, decontaminate, "
            "model, review_model, review_escalate, review_compare, backend, precision, "
            "quality, png_compress_level, webp_method, avif_speed",
        ),
        ('decontaminate = "maybe"', "the job ticket bgremover.toml is invalid: bad setting 'decontaminate': "),
        ("quality = ", "the job ticket bgremover.toml is not valid TOML: "),
    ],
)
def test_a_bad_ticket_is_refused_with_one_sentence(tmp_path, text, error):
    (tmp_path / TICKET_NAME).write_text(text)
    with pytest.raises(TicketError) as refused:
        read_ticket(tmp_path)
    assert str(refused.value).startswith(error)
    assert "\n" not in str(refused.value)


def test_validated_returns_only_what_the_ticket_sets():
    assert validated({"webp_method": 6}) == {"webp_method": 6}
