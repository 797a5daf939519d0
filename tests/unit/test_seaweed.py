"""The embedded server's readiness rules, without a server: volume IDs on disk and listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.seaweed import listed_volumes, parse_volume_ids, volumes_on_disk


@pytest.mark.parametrize(
    ("text", "ids"),
    [(" 1-7", set(range(1, 8))), ("3", {3}), (" 1-3 5 8-9", {1, 2, 3, 5, 8, 9}), ("", set())],
)
def test_volume_id_ranges(text: str, ids: set[int]) -> None:
    assert parse_volume_ids(text) == ids


@pytest.mark.parametrize("text", ["1-x", "a", "1--3"])
def test_garbage_volume_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="volume id"):
        parse_volume_ids(text)


def test_volumes_on_disk_by_their_data_files(tmp_path: Path) -> None:
    for name in ("evidence_1.dat", "evidence_1.idx", "liuhen-canary_12.dat", "9.dat", "x.dat"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "m19333").mkdir()
    assert volumes_on_disk(tmp_path) == {1, 9, 12}
    assert volumes_on_disk(tmp_path / "absent") == set()


def test_listed_volumes_across_nodes() -> None:
    status = {
        "Topology": {
            "DataCenters": [
                {
                    "Racks": [
                        {"DataNodes": [{"VolumeIds": " 1-3"}, {"VolumeIds": " 7"}]},
                        {"DataNodes": [{"VolumeIds": ""}]},
                    ]
                }
            ]
        }
    }
    assert listed_volumes(status) == {1, 2, 3, 7}
    assert listed_volumes({"Topology": {"DataCenters": None}}) == set()


def test_ports_are_picked_below_the_ephemeral_range() -> None:
    from storage.seaweed import PORT_RANGE, pick_ports

    ports = pick_ports(6)
    assert len(set(ports)) == 6
    assert all(PORT_RANGE[0] <= p <= PORT_RANGE[1] and p + 10000 < 32768 for p in ports)
