"""Trusted time on checkpoints: every checkpoint signed while a TSA is configured carries an
RFC 3161 token over the exact note, stored in the index and beside the checkpoint object."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import open_runtime
from integrity.errors import TimestampError
from integrity.tsa import verify_timestamp
from storage import keys
from storage import repository as repo
from tests.conftest import TESTDATA, SettingsFactory
from tests.tsa_server import LocalTSA, local_tsa

PHOTO = TESTDATA / "photos" / "gps" / "DSCN0012.jpg"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTSA]:
    with local_tsa(tmp_path_factory.mktemp("tsa")) as server:
        yield server


def test_checkpoints_are_time_stamped(make_settings: SettingsFactory, tsa: LocalTSA) -> None:
    settings = make_settings(log={"tsa_url": tsa.url, "tsa_roots": [tsa.dir / "ca.pem"]})
    rt = open_runtime(settings)
    try:
        sealed = seal_file(rt, PHOTO, Manifest(case_ids=("T-1",)), actor="test")
        rt.ledger.receipt(sealed.log_index)
        with rt.sessions() as s:
            cp = repo.latest_checkpoint(s)
        assert cp is not None and cp.tsr is not None and cp.tsa_time is not None
        when = verify_timestamp(cp.tsr, cp.note.encode(), roots=[tsa.root_pem])
        assert abs(when - datetime.now(UTC)) < timedelta(minutes=5)
        mirrored = rt.store.read_bytes(
            keys.timestamp_key(cp.size), rt.store.latest_version(keys.timestamp_key(cp.size))
        )
        assert mirrored == cp.tsr
        with pytest.raises(TimestampError):
            verify_timestamp(cp.tsr, cp.note.encode() + b"x", roots=[tsa.root_pem])
    finally:
        rt.close()


def test_unreachable_tsa_still_signs(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """Trusted time is an addition: without it the checkpoint is still signed, only unstamped."""
    root = tmp_path / "none.pem"
    root.write_text("")
    settings = make_settings(
        log={"tsa_url": "http://127.0.0.1:9/", "tsa_roots": [root], "tsa_timeout_s": 1}
    )
    rt = open_runtime(settings)
    try:
        sealed = seal_file(rt, PHOTO, Manifest(), actor="test")
        rt.ledger.receipt(sealed.log_index)
        with rt.sessions() as s:
            cp = repo.latest_checkpoint(s)
        assert cp is not None and cp.size == 2 and cp.tsr is None
    finally:
        rt.close()
