"""Helpers for tests that act as a signed-in user: make one and get its bearer token."""

from __future__ import annotations

from ingest import people
from ingest.runtime import Runtime


def make_user(rt: Runtime, name: str, role: str, unit: str | None = None) -> str:
    """Create ``name`` with ``role`` (and ``unit``) through the service; its API token."""
    new = people.add_user(
        rt.sessions, name=name, role=role, unit=unit, password=None, actor="cli:test"
    )
    return new.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
