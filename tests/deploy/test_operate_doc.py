"""docs/operate.md's configuration reference is the settings code's: every setting, its
default and its explanation, generated, and diffed here (`make settings-reference` rewrites
it)."""

from __future__ import annotations

import shutil

from azdev_ica.settings import Settings
from azdev_ica.settings_reference import (
    BEGIN,
    END,
    field_comments,
    reference_block,
    rewrite,
)
from tests.conftest import ROOT

OPERATE = ROOT / "docs" / "operate.md"


def test_the_reference_in_operate_md_is_the_generated_one():
    text = OPERATE.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert block == reference_block(), "docs/operate.md is stale: run `make settings-reference`"


def test_every_setting_is_listed_with_an_explanation():
    comments = field_comments()
    assert set(comments) == set(Settings.model_fields)
    unexplained = sorted(name for name, text in comments.items() if not text)
    assert unexplained == [], "write a comment above these fields in settings.py"
    text = OPERATE.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"| `ICA_{name.upper()}` |" in text
    assert "| `ICA_SECRETS_DIR` |" in text
    for option in ("--host", "--port", "--workers", "--read-timeout"):
        assert f"| `{option}` |" in text


def test_a_stale_reference_is_rewritten(tmp_path):
    copy = tmp_path / "operate.md"
    shutil.copyfile(OPERATE, copy)
    text = copy.read_text(encoding="utf-8")
    copy.write_text(text.replace("| `ICA_DATA_DIR` | `var` |", "| `ICA_DATA_DIR` | `old` |"))
    assert rewrite(copy) is True
    assert copy.read_text(encoding="utf-8") == text
    assert rewrite(copy) is False


def test_the_readme_links_to_operate_md():
    assert "(docs/operate.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
