"""The reason every admin action takes (a hold, a link, a deletion, disabling a user)."""

from __future__ import annotations

from ingest.errors import InvalidInput


def check_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("a reason is required (--reason TEXT)")
    if len(text) > 2000:
        raise InvalidInput("the reason is longer than 2000 characters")
    if "\x00" in text:
        raise InvalidInput("the reason holds a NUL character")
    return text
