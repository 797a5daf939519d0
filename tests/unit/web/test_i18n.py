"""Every label a template asks for exists in Chinese and English; language negotiation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.web import i18n
from api.web.pages import WEB_DIR

USED = re.compile(r"""\bt\(\s*["']([a-z0-9_]+)["']\s*\)""")
ROUTES = Path(__file__).resolve().parents[3] / "api" / "routes" / "web.py"


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in [*(WEB_DIR / "templates").glob("*.html"), ROUTES]:
        keys |= set(USED.findall(path.read_text()))
    return keys


def test_every_used_label_has_both_languages() -> None:
    used = _used_keys()
    assert len(used) > 50
    roles = {f"role_{r}" for r in ("admin", "officer", "reviewer", "auditor")}
    missing = sorted((used | roles) - set(i18n.LABELS))
    assert missing == []
    for key, (zh, en) in i18n.LABELS.items():
        assert re.search(r"[\u4e00-\u9fff]", zh), f"{key}: the Chinese label has no Chinese"
        assert en and en != zh, key


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "zh"),
        ("", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("fr-FR, en;q=0.5, zh;q=0.7", "zh"),
        ("fr-FR", "zh"),
        ("en;q=0", "zh"),
        ("en;q=bogus, zh;q=0.1", "zh"),
    ],
)
def test_accept_language(header: str | None, lang: str) -> None:
    assert i18n.from_accept_language(header) == lang


def test_durations_and_sizes() -> None:
    assert i18n.duration(270, "zh") == "4 分 30 秒"
    assert i18n.duration(270, "en") == "4 min 30 s"
    assert i18n.duration(3600, "en") == "1 h"
    assert i18n.duration(0, "en") == "0 s"
    assert i18n.duration(2.5, "en") == "2.5 s"
    assert i18n.size(512) == "512 B" and i18n.size(1536) == "1.5 KB"
    assert i18n.coded("status", "ready", "zh") == "就绪"
    assert i18n.coded("status", "novel", "en") == "novel"
