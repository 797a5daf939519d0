"""The session cookie, CSRF tokens, login limits, and the directory of no users (pure)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from api.web import session as session_module
from api.web.session import LoginLimiter, NoDirectory, SessionCodec, new_session, session_key


def test_the_cookie_round_trips_and_refuses_tampering_and_age() -> None:
    codec = SessionCodec(b"k" * 32, max_age_s=3600)
    s = new_session("off1")
    back = codec.loads(codec.dumps(s))
    assert back is not None and (back.sid, back.csrf, back.username) == (s.sid, s.csrf, "off1")
    text = codec.dumps(s)
    assert codec.loads(text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]) is None
    assert SessionCodec(b"x" * 32, max_age_s=3600).loads(text) is None  # another key
    assert codec.loads(None) is None and codec.loads("garbage") is None
    old = SessionCodec(b"k" * 32, max_age_s=1)
    aged = old.dumps(s)
    time.sleep(2.1)
    assert old.loads(aged) is None


def test_csrf_tokens_compare_exactly() -> None:
    s = new_session()
    assert s.check_csrf(s.csrf)
    assert not s.check_csrf(None) and not s.check_csrf("") and not s.check_csrf(s.csrf + "x")
    assert not s.check_csrf("é" + s.csrf[1:])  # beyond ASCII: a refusal, not a TypeError (500)
    assert new_session().csrf != s.csrf


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "web-session.key"
    first = session_key(path)
    assert len(first) == 32 and session_key(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_limiter_counts_tries_per_user_and_address_over_a_window() -> None:
    lim = LoginLimiter(per_user=2, per_address=3, window_s=60)
    assert lim.attempt(username="a", address="1", now=0) == 0
    assert lim.attempt(username="a", address="1", now=10) == 0
    assert lim.attempt(username="a", address="9", now=11) == pytest.approx(49)  # the user
    assert lim.attempt(username="b", address="1", now=12) == 0
    assert lim.attempt(username="c", address="1", now=13) == pytest.approx(47)  # the address
    lim.succeeded(username="b", address="1")  # b's try was good: the address gets it back
    assert lim.attempt(username="c", address="1", now=14) == 0
    assert lim.attempt(username="d", address="1", now=15) == pytest.approx(45)
    lim.not_checked(username="c", address="1")  # c's never reached the password
    assert lim.attempt(username="d", address="1", now=16) == 0
    assert lim.attempt(username="a", address="9", now=61) == 0  # the window moved on


def test_tries_at_once_are_each_counted_before_any_is_checked() -> None:
    lim = LoginLimiter(per_user=3, per_address=100, window_s=60)
    start = threading.Barrier(40)

    def one() -> float:
        start.wait()
        return lim.attempt(username="alice", address="10.0.0.1")

    with ThreadPoolExecutor(40) as pool:
        waits = list(pool.map(lambda _: one(), range(40)))
    assert sum(w == 0 for w in waits) == 3


def test_password_checks_take_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "CHECK_WAIT_S", 0.2)
    lim = LoginLimiter(per_user=3, per_address=3, window_s=60, at_once=1)
    with lim.turn() as first:
        assert first
        with lim.turn() as second:  # the one turn is taken
            assert not second
    with lim.turn() as again:
        assert again


def test_without_a_user_store_nobody_gets_in() -> None:
    rt = cast(Any, None)  # NoDirectory needs nothing
    d = NoDirectory()
    assert d.authenticate(rt, username="u", password="pw", source="127.0.0.1") is None
    assert d.lookup(rt, username="u", sid="s") is None
    with pytest.raises(RuntimeError):
        d.start(rt, username="u", sid="s")
