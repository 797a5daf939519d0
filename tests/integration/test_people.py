"""People on a real index (SQLite and PostgreSQL): users and roles, Argon2 passwords, hashed
and revocable API tokens, grants with an expiry, and failed sign-ins kept as events."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ingest import people
from ingest.errors import BadPassword, InvalidInput, Unauthenticated
from ingest.people import Principal
from ingest.runtime import Runtime
from storage import people as pstore
from storage import repository as repo
from storage.db import transaction
from storage.errors import Conflict, NotFound
from storage.tables import ApiToken, Person, User


def test_add_user_issues_a_token_that_only_its_hash_is_kept_of(rt: Runtime) -> None:
    new = people.add_user(
        rt.sessions, name="110123", role="officer", unit="U-1", password="s3cret!", actor="cli:a"
    )
    assert new.document() == {
        "user": "110123",
        "role": "officer",
        "unit": "U-1",
        "token": new.token,
    }
    assert new.token.startswith("lh_") and len(new.token) > 40
    with rt.sessions() as s:
        user = s.get(User, "110123")
        assert user is not None and user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert "s3cret!" not in user.password_hash
        hashes = list(s.scalars(select(ApiToken.token_hash)))
        assert hashes == [hashlib.sha256(new.token.encode()).hexdigest()]
        assert new.token not in hashes
        # An officer's user name is their officer ID: items recorded under it are the unit's.
        person = s.get(Person, "110123")
        assert person is not None and person.unit == "U-1"
        assert people.principal_for_token(s, new.token) == Principal(
            kind="user", name="110123", role="officer", unit="U-1"
        )


def test_bad_users_are_refused_and_leave_nothing(rt: Runtime) -> None:
    people.add_user(rt.sessions, name="a1", role="auditor", unit=None, password=None, actor="x")
    for kwargs, error in (
        ({"name": "a1", "role": "auditor"}, Conflict),
        ({"name": "bad name", "role": "auditor"}, InvalidInput),
        ({"name": "b1", "role": "superuser"}, InvalidInput),
        ({"name": "b1", "role": "officer"}, InvalidInput),  # no unit
        ({"name": "b1", "role": "admin", "password": ""}, InvalidInput),
    ):
        args = {"unit": None, "password": None, **kwargs}
        with pytest.raises(error):
            people.add_user(rt.sessions, actor="x", **args)  # type: ignore[arg-type]
    with rt.sessions() as s:
        assert [u.name for u in pstore.users(s)] == ["a1"]
        assert len(list(s.scalars(select(ApiToken)))) == 1


def test_passwords_check_and_failures_are_logged(rt: Runtime) -> None:
    people.add_user(rt.sessions, name="rev", role="reviewer", unit=None, password="pw-1", actor="x")
    people.add_user(rt.sessions, name="tok", role="auditor", unit=None, password=None, actor="x")
    ok = people.check_password(rt.sessions, username="rev", password="pw-1", source="1.2.3.4")
    assert ok == Principal(kind="user", name="rev", role="reviewer", unit=None)
    for username, password in (("rev", "pw-2"), ("nobody", "pw-1"), ("tok", ""), ("x y", "z")):
        with pytest.raises(BadPassword, match="wrong user name or password"):
            people.check_password(rt.sessions, username=username, password=password)
    with rt.sessions() as s:
        failed = [e for e in pstore.case_events(s) if e.action == "login_failed"]
    assert [e.actor for e in failed] == ["user:rev", "user:nobody", "user:tok", "user:x y"]


def test_tokens_are_revocable(rt: Runtime) -> None:
    first = people.add_user(
        rt.sessions, name="o", role="officer", unit="U", password=None, actor="x"
    ).token
    second = people.issue_token(rt.sessions, name="o", actor="x")
    with rt.sessions() as s:
        assert people.principal_for_token(s, first).name == "o"
        assert people.principal_for_token(s, second).name == "o"
    third = people.issue_token(rt.sessions, name="o", actor="x", revoke_others=True)
    with rt.sessions() as s:
        for dead in (first, second, "lh_forged", "garbage"):
            with pytest.raises(Unauthenticated):
                people.principal_for_token(s, dead)
        assert people.principal_for_token(s, third).name == "o"
    assert people.revoke_tokens(rt.sessions, name="o", actor="x") == 1
    with rt.sessions() as s, pytest.raises(Unauthenticated):
        people.principal_for_token(s, third)
    with pytest.raises(NotFound):
        people.issue_token(rt.sessions, name="nobody", actor="x")


def test_grants_expire_and_are_only_for_reviewers(rt: Runtime) -> None:
    people.add_user(rt.sessions, name="rev", role="reviewer", unit=None, password=None, actor="x")
    people.add_user(rt.sessions, name="o", role="officer", unit="U", password=None, actor="x")
    now = datetime.now(UTC)
    with transaction(rt.sessions) as s:
        repo.ensure_case(s, case_id="C-1", now=now)
    with pytest.raises(InvalidInput, match="reviewers"):
        people.grant(rt.sessions, name="o", case_id="C-1", until=None, actor="x")
    with pytest.raises(NotFound):
        people.grant(rt.sessions, name="rev", case_id="C-404", until=None, actor="x")
    with pytest.raises(InvalidInput, match="future"):
        people.grant(rt.sessions, name="rev", case_id="C-1", until=now, actor="x")
    with pytest.raises(InvalidInput, match="time zone"):
        naive = datetime(2030, 1, 1)  # noqa: DTZ001 - the point of the test
        people.grant(rt.sessions, name="rev", case_id="C-1", until=naive, actor="x")
    doc = people.grant(rt.sessions, name="rev", case_id="C-1", until=None, actor="x")
    until = datetime.fromisoformat(doc["until"].replace("Z", "+00:00"))
    assert timedelta(days=29) < until - now <= people.DEFAULT_GRANT + timedelta(seconds=5)
    with rt.sessions() as s:
        listed = people.list_users(s)
    assert [(u["user"], u["tokens"], [g["case_id"] for g in u["grants"]]) for u in listed] == [
        ("o", 1, []),
        ("rev", 1, ["C-1"]),
    ]
    assert people.revoke(rt.sessions, name="rev", case_id="C-1", actor="x")["revoked"] == 1
    with rt.sessions() as s:
        assert pstore.grants_of(s, user_name="rev") == []
        actions = [e.action for e in pstore.case_events(s, case_id="C-1")]
    assert actions == ["grant", "revoke"]
