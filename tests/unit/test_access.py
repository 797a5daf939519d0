"""The role table of ingest/access.py against DESIGN.md's "Who may do what" (no I/O: with no
target, ``decide`` looks at the role alone), and the pure parts of ingest/people.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from argon2 import PasswordHasher

from ingest import people
from ingest.access import ROLE_ACTIONS, Action, decide
from ingest.errors import InvalidInput
from ingest.people import Principal

NOW = datetime(2026, 12, 1, tzinfo=UTC)
NO_SESSION = cast(Any, None)  # decide() must not touch it when there is no target
WRITES = {Action.ITEM_UPLOAD, Action.ITEM_LINK, Action.CASE_LINK, Action.CASE_HOLD}


def _p(role: str, unit: str | None = None) -> Principal:
    return Principal(kind="user", name="n", role=role, unit=unit)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", ["admin", "officer", "reviewer", "auditor", "device", "x"])
def test_the_role_gate(role: str, action: Action) -> None:
    reason = decide(NO_SESSION, _p(role, "U"), action, now=NOW)
    assert (reason is None) == (action in ROLE_ACTIONS.get(role, frozenset()))
    if reason is not None:
        assert role in reason and action.value in reason


def test_the_table_says_what_the_design_says() -> None:
    assert not ROLE_ACTIONS["reviewer"] & WRITES  # read-only
    assert Action.CASE_EXPORT in ROLE_ACTIONS["reviewer"] & ROLE_ACTIONS["officer"]
    assert ROLE_ACTIONS["auditor"] == {
        Action.ITEM_RECEIPT,
        Action.LOG_READ,
        Action.SUPERVISION_READ,
    }
    assert {r for r, acts in ROLE_ACTIONS.items() if Action.SUPERVISION_READ in acts} == {
        "admin",
        "auditor",
    }
    assert Action.ITEM_READ not in ROLE_ACTIONS["admin"] | ROLE_ACTIONS["auditor"]
    assert {r for r, acts in ROLE_ACTIONS.items() if Action.CASE_HOLD in acts} == {"admin"}
    assert {r for r, acts in ROLE_ACTIONS.items() if Action.ITEM_UPLOAD in acts} == {
        "officer",
        "device",
    }


def test_principal_actor_and_tokens() -> None:
    assert _p("officer").actor == "user:n"
    assert Principal(kind="device", name="DSJ-1", role="device", unit="U").actor == "device:DSJ-1"
    a, b = people.new_token(), people.new_token()
    assert a != b and a.startswith("lh_") and len(a) == 3 + 43
    assert people.token_hash(a) != people.token_hash(b) and len(people.token_hash(a)) == 64


def test_password_hashes_are_argon2id_and_salted() -> None:
    one, two = people.hash_password("pw"), people.hash_password("pw")
    assert one != two and one.startswith("$argon2id$")
    assert PasswordHasher().verify(one, "pw")
    with pytest.raises(InvalidInput):
        people.hash_password("")


@pytest.mark.parametrize("name", ["", " a", "a b", "a/b", "x" * 57, "-a"])
def test_bad_user_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="user name"):
        people.check_user_name(name)
