"""Who may do what, over HTTP on real services: every role x every endpoint x an item and case
of the officer's own unit (granted to the reviewer) / of another unit (whose grant expired).
Each denial must be recorded: a ``denied`` custody event on the item it concerns, a ``denied``
case event for a case (or for nothing in particular)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from configs.settings import Settings
from ingest import people
from ingest.runtime import Runtime
from ingest.verify import verify_all
from storage import people as pstore
from storage import repository as repo
from tests.people import bearer, make_user

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
PROBLEM_JSON = "application/problem+json"


def _clip() -> bytes:
    return MP4_HEAD + os.urandom(2048)


@dataclass(frozen=True)
class World:
    client: TestClient
    rt: Runtime
    tokens: dict[str, str]
    items: dict[str, str]
    """"own" / "other": an item of unit U-1 in case C-OWN / of unit U-2 in case C-OTHER."""


CASES = {"own": "C-OWN", "other": "C-OTHER"}


def _upload(client: TestClient, token: str, case_id: str) -> Response:
    r: Response = client.post(
        "/v1/items",
        files={"file": ("clip.mp4", _clip(), "application/octet-stream")},
        data={"manifest": json.dumps({"case_ids": [case_id]})},
        headers=bearer(token),
    )
    return r


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        tokens = {
            "admin": make_user(rt, "root", "admin"),
            "officer": make_user(rt, "110001", "officer", "U-1"),
            "officer2": make_user(rt, "220002", "officer", "U-2"),
            "reviewer": make_user(rt, "rev", "reviewer"),
            "auditor": make_user(rt, "aud", "auditor"),
        }
        own = _upload(client, tokens["officer"], CASES["own"])
        other = _upload(client, tokens["officer2"], CASES["other"])
        assert (own.status_code, other.status_code) == (201, 201), (own.text, other.text)
        past = datetime.now(UTC) - timedelta(days=10)
        people.grant(rt.sessions, name="rev", case_id=CASES["own"], until=None, actor="cli:t")
        people.grant(
            rt.sessions,
            name="rev",
            case_id=CASES["other"],
            until=past + timedelta(days=1),
            actor="cli:t",
            now=past,
        )
        yield World(client, rt, tokens, {"own": own.json()["id"], "other": other.json()["id"]})


ROLES = ("anonymous", "admin", "officer", "reviewer", "auditor")
OK, DENY, ANON = "ok", "deny", "anon"


def _expect(role: str, rule: dict[str, str] | str, target: str) -> str:
    if role == "anonymous":
        return ANON
    value = rule if isinstance(rule, str) else rule.get(role, DENY)
    return value if value in (OK, DENY) else (OK if value == target else DENY)


# (name, method, path template, body, who may: role -> OK / DENY / "own" (only the own
# target), the status when allowed, what a denial concerns: item / case / upload / none)
ENDPOINTS: list[tuple[str, str, str, Any, dict[str, str] | str, int, str]] = [
    ("search", "GET", "/v1/items?case={case}", None,
     {"officer": OK, "reviewer": OK}, 200, "none"),
    ("upload", "POST", "/v1/items", "upload", {"officer": "own"}, 201, "upload"),
    ("item", "GET", "/v1/items/{item}", None, {"officer": "own", "reviewer": "own"}, 200, "item"),
    ("original", "GET", "/v1/items/{item}/original", None,
     {"officer": "own", "reviewer": "own"}, 200, "item"),
    ("derivative", "GET", "/v1/items/{item}/derivatives/proxy", None,
     {"officer": "own", "reviewer": "own"}, 404, "item"),
    ("receipt", "GET", "/v1/items/{item}/receipt", None,
     {"officer": "own", "reviewer": "own", "auditor": OK}, 200, "item"),
    ("link", "PUT", "/v1/items/{item}/cases/NEW-{target}", {"reason": "matrix"},
     {"officer": "own"}, 200, "item"),
    ("unlink", "DELETE", "/v1/items/{item}/cases/NEW-{target}?reason=matrix", None,
     {"officer": "own"}, 200, "item"),
    ("case", "GET", "/v1/cases/{case}", None, {"officer": "own", "reviewer": "own"}, 200, "case"),
    ("release", "POST", "/v1/cases/{case}/release", {"reason": "matrix"},
     {"admin": OK}, 200, "case"),
    ("hold", "POST", "/v1/cases/{case}/hold", {"reason": "matrix"}, {"admin": OK}, 200, "case"),
    ("checkpoint", "GET", "/v1/log/checkpoint", None,
     OK, 200, "none"),
    ("consistency", "GET", "/v1/log/proof/consistency?from=1&to=2", None,
     OK, 200, "none"),
]  # fmt: skip


def _request(w: World, role: str, method: str, path: str, body: Any, case: str) -> Response:
    headers = {} if role == "anonymous" else bearer(w.tokens[role])
    if body == "upload":
        r: Response = w.client.post(
            path,
            files={"file": ("m.mp4", _clip(), "application/octet-stream")},
            data={"manifest": json.dumps({"case_ids": [case]})},
            headers=headers,
        )
        return r
    r = w.client.request(method, path, json=body, headers=headers)
    return r


def _denials(w: World, item_id: str) -> list[Any]:
    with w.rt.sessions() as s:
        return [e for e in repo.custody_of(s, item_id=item_id) if e.action == "denied"]


def _case_denials(w: World) -> list[Any]:
    with w.rt.sessions() as s:
        return [e for e in pstore.case_events(s) if e.action in ("denied", "unauthenticated")]


def test_the_whole_matrix(world: World) -> None:
    w = world
    walked = 0
    for name, method, template, body, rule, allowed_status, concerns in ENDPOINTS:
        for role in ROLES:
            for target in ("own", "other"):
                item_id, case_id = w.items[target], CASES[target]
                path = template.format(item=item_id, case=case_id, target=target)
                before_item, before_case = len(_denials(w, item_id)), len(_case_denials(w))
                r = _request(w, role, method, path, body, case_id)
                expected = _expect(role, rule, target)
                where = f"{role} {name} {target}: {r.status_code} {r.text[:200]}"
                walked += 1
                if expected == OK:
                    assert r.status_code == allowed_status, where
                    assert len(_denials(w, item_id)) == before_item, where
                    assert len(_case_denials(w)) == before_case, where
                    continue
                status = 401 if expected == ANON else 403
                assert r.status_code == status, where
                assert r.headers["content-type"].startswith(PROBLEM_JSON), where
                assert r.json()["code"] == ("unauthenticated" if status == 401 else "forbidden")
                if status == 401:
                    assert r.headers["www-authenticate"].startswith("Bearer"), where
                    events = _case_denials(w)
                    assert len(events) == before_case + 1, where
                    assert (events[-1].action, events[-1].actor) == ("unauthenticated", "anonymous")
                    continue
                actor = f"user:{people_name(role)}"
                if concerns == "item":
                    denied = _denials(w, item_id)
                    assert len(denied) == before_item + 1, where
                    last = denied[-1]
                    assert last.actor == actor, where
                    assert last.details["attempted"].startswith(("item.", "case.")), where
                    assert last.reason, where
                else:
                    events = _case_denials(w)
                    assert len(events) == before_case + 1, where
                    last = events[-1]
                    assert (last.action, last.actor) == ("denied", actor), where
                    # An upload names its cases in the body: only the officer gets that far.
                    named = concerns == "case" or (concerns == "upload" and role == "officer")
                    assert last.case_id == (case_id if named else None), where
                    assert last.reason, where
    assert walked == len(ENDPOINTS) * len(ROLES) * 2
    # Denials are custody leaves like any other: every chain still verifies.
    report = verify_all(w.rt, actor="cli:test")
    assert report.ok, report.failures


def people_name(role: str) -> str:
    return {"admin": "root", "officer": "110001", "reviewer": "rev", "auditor": "aud"}[role]


def test_search_shows_each_principal_only_what_it_may_see(world: World) -> None:
    w = world

    def ids(role: str) -> set[str]:
        r = w.client.get("/v1/items", headers=bearer(w.tokens[role]))
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"items", "next"}  # no count that could leak
        return {i["id"] for i in r.json()["items"]}

    assert ids("officer") == {w.items["own"]}
    assert ids("officer2") == {w.items["other"]}
    assert ids("reviewer") == {w.items["own"]}  # the other grant expired
    assert w.client.get("/v1/items", headers=bearer(w.tokens["auditor"])).status_code == 403


def test_expired_grant_is_named_and_a_fresh_grant_opens_the_case(world: World) -> None:
    w = world
    url = f"/v1/cases/{CASES['other']}"
    r = w.client.get(url, headers=bearer(w.tokens["reviewer"]))
    assert r.status_code == 403
    assert "expired" in r.json()["detail"]
    people.grant(w.rt.sessions, name="rev", case_id=CASES["other"], until=None, actor="cli:t")
    r = w.client.get(url, headers=bearer(w.tokens["reviewer"]))
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [w.items["other"]]
    people.revoke(w.rt.sessions, name="rev", case_id=CASES["other"], actor="cli:t")
    assert w.client.get(url, headers=bearer(w.tokens["reviewer"])).status_code == 403


def test_officer_may_not_put_items_into_another_units_case(world: World) -> None:
    w = world
    r = w.client.put(
        f"/v1/items/{w.items['own']}/cases/{CASES['other']}",
        json={"reason": "try"},
        headers=bearer(w.tokens["officer"]),
    )
    assert r.status_code == 403, r.text
    with w.rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=w.items["own"]) == [CASES["own"]]
    denied = _denials(w, w.items["own"])[-1]
    assert denied.details == {"attempted": "item.link", "role": "officer", "case_id": "C-OTHER"}


def test_self_declared_actor_header_and_bad_tokens_are_refused(world: World) -> None:
    w = world
    url = f"/v1/items/{w.items['own']}"
    for headers in (
        {"X-Liuhen-Actor": "110001"},
        {"Authorization": "Bearer lh_not-a-real-token"},
        {"Authorization": "Bearer something-else"},
        {"Authorization": "Basic cm9vdDpyb290"},
    ):
        r = w.client.get(url, headers=headers)
        assert r.status_code == 401, headers
    people.revoke_tokens(w.rt.sessions, name="110001", actor="cli:t")
    assert w.client.get(url, headers=bearer(w.tokens["officer"])).status_code == 401
    fresh = people.issue_token(w.rt.sessions, name="110001", actor="cli:t")
    assert w.client.get(url, headers=bearer(fresh)).status_code == 200


def test_open_endpoints(world: World) -> None:
    assert world.client.get("/healthz").status_code == 200
    key = world.client.get("/v1/log/key")
    assert key.status_code == 200
    assert key.text.strip() == world.rt.ledger.key.verifier_key
