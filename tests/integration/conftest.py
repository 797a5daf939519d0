"""Every integration test that uses ``rt`` also checks one rule of the log: no object-store
call is made while a transaction holds the sequencer (DESIGN: the sequencer never waits on
the network)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.logkit import store_calls_under_the_sequencer


@pytest.fixture(autouse=True)
def _no_store_call_under_the_sequencer(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if "rt" not in request.fixturenames:
        yield
        return
    rt = request.getfixturevalue("rt")
    with store_calls_under_the_sequencer(rt, monkeypatch) as calls:
        yield
    assert calls == [], f"object-store calls made while the sequencer was held: {calls}"
