"""docs/settings.md and config/bgremover.toml are written from the settings' sections, and must not drift from them."""

from __future__ import annotations

from bgremover import settingsdocs


def test_the_settings_page_is_what_the_sections_write():
    assert settingsdocs.DOCS.read_text("utf-8") == settingsdocs.markdown(), "run python -m bgremover.settingsdocs"


def test_the_example_config_is_what_the_sections_write():
    assert settingsdocs.CONFIG.read_text("utf-8") == settingsdocs.toml(), "run python -m bgremover.settingsdocs"


def test_the_check_fails_on_a_drifted_page(tmp_path, monkeypatch):
    drifted = tmp_path / "settings.md"
    drifted.write_text(settingsdocs.markdown().replace("`u2netp`", "`isnet-small`"), "utf-8")
    monkeypatch.setattr(settingsdocs, "DOCS", drifted)
    assert settingsdocs.main(["--check"]) == 1
