"""The export package: a zipped BagIt bag a reviewer checks offline, with tools nobody here
wrote (``bagit``, ``sha256sum``, ``openssl``) and with ``liuhen verify PACKAGE.zip``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bagit
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from configs.settings import Settings
from ingest import jobs, links, people
from ingest.errors import InvalidInput
from ingest.export import ExportResult, export_to_file, stream_export
from ingest.ledger import LogCorrupt
from ingest.runtime import Runtime, open_runtime
from ingest.verify import verify_all
from integrity import package
from integrity.errors import HashMismatch
from integrity.note import Checkpoint, generate_signer_key, sign_note, split_note
from integrity.package import PackageReport, verify_package
from storage import keys
from storage import people as people_store
from storage import repository as repo
from tests.cli import cli_env, run_cli
from tests.conftest import TESTDATA, SettingsFactory
from tests.integration.logkit import distinct_files, seal, sql
from tests.people import bearer, make_user
from tests.tsa_server import local_tsa

CASE = "XF-2026/0042"
PHOTO = TESTDATA / "photos" / "mobile" / "date-priority-test.jpg"
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
"""Most tests here are about the package, not the index: one backend is enough for them."""


@dataclass(frozen=True)
class Exported:
    path: Path
    result: ExportResult
    key: str
    item_ids: list[str]
    top: str


@pytest.fixture
def exported(rt: Runtime, tmp_path: Path) -> Exported:
    photo = seal(rt, PHOTO, CASE)
    jobs.run(rt, photo.item_id)  # thumbnails: derivatives in the package
    clip = seal(rt, distinct_files(tmp_path / "in", 1)[0], CASE, "OTHER-1")
    seal(rt, distinct_files(tmp_path / "other", 1)[0], "OTHER-1")  # not in the case
    path = tmp_path / "case.zip"
    result = export_to_file(rt, case_id=CASE, actor="reviewer:wang", output=path)
    with zipfile.ZipFile(path) as zf:
        top = zf.namelist()[0].split("/")[0]
    return Exported(path, result, rt.ledger.key.verifier_key, [photo.item_id, clip.item_id], top)


def _files(report: PackageReport) -> set[str]:
    return {f.file for f in report.failures}


def test_export_then_offline_verify_passes(rt: Runtime, exported: Exported) -> None:
    result = exported.result
    assert result.items == 2
    assert result.sha256 == hashlib.sha256(exported.path.read_bytes()).hexdigest()
    assert re.fullmatch(r"XF-2026_0042-\d{8}T\d{6}Z", exported.top)  # "/" made safe
    report = verify_package(exported.path, verifier_key=exported.key)
    assert report.failures == []
    assert (report.ok, report.checked, report.key, report.warning) == (True, 2, "given", None)
    assert report.checkpoint_size == result.checkpoint_size
    own = verify_package(exported.path)
    assert own.ok and own.key == "package"
    assert own.warning is not None and "proves nothing by itself" in own.warning

    with zipfile.ZipFile(exported.path) as zf:
        names = {n.removeprefix(exported.top + "/") for n in zf.namelist()}
    photo, clip = exported.item_ids
    assert {
        "bagit.txt",
        "bag-info.txt",
        "manifest-sha256.txt",
        "tagmanifest-sha256.txt",
        f"data/items/{photo}/original.jpg",
        f"data/items/{photo}/metadata.json",
        f"data/items/{photo}/custody.jsonl",
        f"data/items/{clip}/original.bin",
        "data/log/checkpoint",
        "data/log/log-key.txt",
        "data/log/log-key.pem",
        "data/VERIFY.md",
        "data/report.html",
    } <= names
    assert any(re.fullmatch(rf"data/items/{photo}/thumb-\d+\.jpg", n) for n in names)
    with rt.sessions() as session:
        wanted = {
            leaf.idx
            for item_id in exported.item_ids
            for leaf in repo.leaves_between(session, start=0, stop=result.checkpoint_size)
            if leaf.item_id == item_id
        }
        in_case = {i.id for i in repo.items_of_case(session, case_id=CASE)}
    assert in_case == set(exported.item_ids)
    leaves = {int(n.split("/")[-1][:-5]) for n in names if n.startswith("data/log/leaves/")}
    proofs = {int(n.split("/")[-1][:-11]) for n in names if n.startswith("data/log/proofs/")}
    assert leaves == proofs == wanted  # every leaf of the case's items, and only those


@SQLITE
def test_export_is_a_custody_event_naming_the_package_hash(rt: Runtime, exported: Exported) -> None:
    with rt.sessions() as session:
        for item_id in exported.item_ids:
            events = [e for e in repo.custody_of(session, item_id=item_id) if e.action == "export"]
            assert len(events) == 1
            assert events[0].actor == "reviewer:wang"
            assert events[0].details is not None
            assert events[0].details["package_sha256"] == exported.result.sha256
            assert events[0].details["case_id"] == CASE
            assert events[0].log_index >= exported.result.checkpoint_size
    assert verify_all(rt, actor="auditor").ok


@SQLITE
def test_tools_nobody_here_wrote_accept_the_unzipped_bag(
    exported: Exported, tmp_path: Path
) -> None:
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(exported.path) as zf:
        zf.extractall(out)
    folder = out / exported.top
    bag = bagit.Bag(str(folder))
    bag.validate()  # raises BagValidationError on any problem
    assert bag.info["Liuhen-Case"] == CASE
    assert bag.info["Liuhen-Checkpoint-Size"] == str(exported.result.checkpoint_size)
    for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
        checked = subprocess.run(
            ["sha256sum", "--strict", "-c", manifest],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count(": OK") == len((folder / manifest).read_text().splitlines())


def _blocks(markdown: str, heading: str) -> str:
    """The indented command lines of one VERIFY.md section."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    return "\n".join(line[4:] for line in section.splitlines() if line.startswith("    "))


@SQLITE
def test_verify_md_commands_really_check_the_package(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(exported.path) as zf:
        zf.extractall(out)
    folder = out / exported.top
    guide = (folder / "data" / "VERIFY.md").read_text()

    def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-c", script], cwd=cwd, capture_output=True, text=True, check=False
        )

    keys = bash(_blocks(guide, "## 2."), folder)
    assert keys.returncode == 0, keys.stderr
    printed = [line for line in keys.stdout.splitlines() if line.strip()]
    assert len(printed) == 4 and printed[:2] == printed[2:]  # the same 32 bytes twice

    signature = bash(_blocks(guide, "## 3."), folder)
    assert signature.returncode == 0, signature.stderr
    assert "Signature Verified Successfully" in signature.stdout
    # The same commands refuse a checkpoint whose text changed.
    log = folder / "data" / "log"
    note = (log / "checkpoint").read_text()
    origin, size, rest = note.split("\n", 2)
    (log / "checkpoint").write_text(f"{origin}\n{int(size) + 1}\n{rest}")
    forged = bash(_blocks(guide, "## 3."), folder)
    assert forged.returncode != 0 and "Signature Verified Successfully" not in forged.stdout
    (log / "checkpoint").write_text(note)

    script = guide.split("```python\n", 1)[1].split("```", 1)[0]
    proofs = subprocess.run(
        ["python3", "-c", script], cwd=folder, capture_output=True, text=True, check=False
    )
    assert proofs.returncode == 0, proofs.stdout + proofs.stderr
    assert "0 bad proof(s)" in proofs.stdout
    leaf = sorted((log / "leaves").iterdir())[0]
    leaf.write_bytes(leaf.read_bytes().replace(b'"v":1', b'"v":2'))
    caught = subprocess.run(
        ["python3", "-c", script], cwd=folder, capture_output=True, text=True, check=False
    )
    assert caught.returncode == 1 and f"NOT IN THE LOG: {leaf.relative_to(folder)}" in caught.stdout


def _flip(src: Path, dst: Path, member: str, at: int) -> None:
    """Copy the zip, flipping one byte of ``member``'s stored data (at offset ``at``)."""
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    assert 0 <= at < info.file_size
    raw[start + at] ^= 0x01
    dst.write_bytes(bytes(raw))


def _member(exported: Exported, pattern: str) -> str:
    with zipfile.ZipFile(exported.path) as zf:
        found = [n for n in zf.namelist() if re.fullmatch(pattern, n.split("/", 1)[1])]
    assert found, pattern
    return found[0]


@pytest.mark.parametrize(
    "pattern",
    [
        r"data/items/\w+/original\.jpg",
        r"data/items/\w+/thumb-\d+\.jpg",
        r"data/items/\w+/custody\.jsonl",
        r"data/items/\w+/metadata\.json",
        r"data/log/proofs/\d+\.tlog-proof",
        r"data/log/leaves/\d+\.json",
        r"data/log/checkpoint",
        r"data/log/log-key\.pem",
        r"data/report\.html",
        r"bag-info\.txt",
        r"manifest-sha256\.txt",
    ],
)
@SQLITE
def test_one_flipped_byte_fails_naming_its_file(
    exported: Exported, tmp_path: Path, pattern: str
) -> None:
    member = _member(exported, pattern)
    with zipfile.ZipFile(exported.path) as zf:
        size = zf.getinfo(member).file_size
    flipped = tmp_path / "flipped.zip"
    _flip(exported.path, flipped, member, size // 2)
    report = verify_package(flipped, verifier_key=exported.key)
    assert not report.ok
    assert member.split("/", 1)[1] in _files(report), report.failures


def _forge(exported: Exported, dst: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite the package the way a careful forger would: ``change`` its files (by zip
    member name), then make both manifests (and Payload-Oxum) agree with the result."""
    top = exported.top
    with zipfile.ZipFile(exported.path) as src:
        files = {n: src.read(n) for n in src.namelist()}
    change(files)
    payload = {n: d for n, d in files.items() if n.split("/", 1)[1].startswith("data/")}
    info = files[f"{top}/bag-info.txt"].decode()
    oxum = f"{sum(len(d) for d in payload.values())}.{len(payload)}"
    files[f"{top}/bag-info.txt"] = re.sub(
        r"Payload-Oxum: \S+", f"Payload-Oxum: {oxum}", info
    ).encode()
    files[f"{top}/manifest-sha256.txt"] = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {n.split('/', 1)[1]}\n" for n, d in payload.items()
    ).encode()
    files[f"{top}/tagmanifest-sha256.txt"] = "".join(
        f"{hashlib.sha256(files[f'{top}/{t}']).hexdigest()}  {t}\n"
        for t in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt")
    ).encode()
    with zipfile.ZipFile(dst, "w") as out:
        for n, d in files.items():
            out.writestr(n, d)


@SQLITE
def test_a_custody_line_changed_by_a_careful_forger_is_named(
    exported: Exported, tmp_path: Path
) -> None:
    """New manifests over a changed custody line: the bag is whole, the log disproves it."""
    member = _member(exported, r"data/items/\w+/custody\.jsonl")
    rel = member.split("/", 1)[1]

    def change(files: dict[str, bytes]) -> None:
        before = files[member]
        files[member] = before.replace(b'"actor":"test"', b'"actor":"nobody"', 1)
        assert files[member] != before

    forged = tmp_path / "forged.zip"
    _forge(exported, forged, change)
    report = verify_package(forged, verifier_key=exported.key)
    assert {(f.file, f.code) for f in report.failures} >= {
        (rel, "custody_unproven"),  # the changed line is no leaf of the log
        (rel, "custody_incomplete"),  # and the logged one is gone
    }
    assert all(f.file == rel for f in report.failures), report.failures


@SQLITE
def test_a_derivative_left_out_by_a_careful_forger_is_named(
    exported: Exported, tmp_path: Path
) -> None:
    member = _member(exported, r"data/items/\w+/thumb-\d+\.jpg")
    forged = tmp_path / "forged.zip"

    def change(files: dict[str, bytes]) -> None:
        del files[member]

    _forge(exported, forged, change)
    report = verify_package(forged, verifier_key=exported.key)
    folder = member.split("/", 1)[1].rsplit("/", 1)[0]
    assert [(f.file, f.code) for f in report.failures] == [(folder, "derivative_missing")]


@SQLITE
@pytest.mark.parametrize(
    "alias",
    ["data//items/{id}/{name}", "data/./items/{id}/{name}", "Data/items/{id}/{name}",
     "data\\items\\{id}\\{name}", "data/items/{id}/extra/{name}"],
)  # fmt: skip
def test_an_entry_that_unzips_over_another_is_named(
    exported: Exported, tmp_path: Path, alias: str
) -> None:
    """A careful forger adds a second entry for the original under another spelling of its
    path, listed in the new manifests: the check would read the real one, an unzip (or a
    case-insensitive disk) would put the fake one in its place."""
    member = _member(exported, r"data/items/\w+/original\.\w+")
    _, _, item_id, name = member.split("/", 1)[1].split("/")
    fake = alias.format(id=item_id, name=name)

    def change(files: dict[str, bytes]) -> None:
        files[f"{exported.top}/{fake}"] = b"FAKE VIDEO"

    forged = tmp_path / "forged.zip"
    _forge(exported, forged, change)
    report = verify_package(forged, verifier_key=exported.key)
    assert not report.ok
    assert (fake, "unexpected_file" if "extra" in alias else "bad_name") in {
        (f.file, f.code) for f in report.failures
    }


@SQLITE
def test_two_entries_of_one_name_are_named(exported: Exported, tmp_path: Path) -> None:
    """A fake thumbnail first, the real package after it: a check that opens entries by name
    reads the last; ``unzip -n`` keeps the first."""
    member = _member(exported, r"data/items/\w+/thumb-\d+\.jpg")
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(exported.path) as src, zipfile.ZipFile(forged, "w") as out:
        out.writestr(member, b"FAKE")
        with pytest.warns(UserWarning, match="Duplicate name"):
            for n in src.namelist():
                out.writestr(n, src.read(n))
    report = verify_package(forged, verifier_key=exported.key)
    assert (member.split("/", 1)[1], "duplicate_entry") in {
        (f.file, f.code) for f in report.failures
    }


@SQLITE
def test_a_checkpoint_of_another_log_signed_with_this_key_fails(
    rt: Runtime, exported: Exported, tmp_path: Path
) -> None:
    """The same key signing a checkpoint under another origin (a key used for two logs) is
    not this log's checkpoint, whatever the package's bag-info says."""
    top = exported.top

    def change(files: dict[str, bytes]) -> None:
        note = files[f"{top}/data/log/checkpoint"]
        real = Checkpoint.parse(split_note(note.decode())[0])
        other = Checkpoint(origin="some-other-log", size=real.size, root_hash=real.root_hash)
        forged_note = sign_note(other.to_text(), [rt.ledger.key.signer]).encode()
        for n in files:  # the checkpoint, and the copy of it in every proof
            files[n] = files[n].replace(note, forged_note)
        info = files[f"{top}/bag-info.txt"].decode()
        files[f"{top}/bag-info.txt"] = re.sub(
            r"Liuhen-Log-Origin: .*", "Liuhen-Log-Origin: some-other-log", info
        ).encode()

    forged = tmp_path / "forged.zip"
    _forge(exported, forged, change)
    report = verify_package(forged, verifier_key=exported.key)
    assert [(f.file, f.code) for f in report.failures] == [
        ("data/log/checkpoint", "checkpoint_origin")
    ]


@SQLITE
def test_a_package_checked_against_another_logs_key_fails(
    exported: Exported, settings: Settings
) -> None:
    _, stranger = generate_signer_key(settings.log.origin)
    report = verify_package(exported.path, verifier_key=stranger)
    assert not report.ok
    assert {
        ("data/log/log-key.txt", "log_key"),
        ("data/log/checkpoint", "checkpoint_signature"),
    } <= {(f.file, f.code) for f in report.failures}


@SQLITE
def test_cli_export_and_offline_verify_need_no_database_nor_store(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    item = seal(rt, distinct_files(tmp_path / "in", 1)[0], CASE)
    env = cli_env(settings.home_dir, settings)
    out = tmp_path / "out.zip"
    made = run_cli("export", CASE, "-o", out, "--json", env=env, cwd=tmp_path)
    assert made.returncode == 0, str(made)
    doc = made.json()
    assert set(doc) == {"path", "sha256", "items", "checkpoint_size"}
    assert (doc["path"], doc["items"]) == (str(out), 1)
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

    # Nothing to reach: a database and a store that do not exist.
    offline = cli_env(tmp_path / "nowhere") | {
        "LIUHEN_DATABASE__URL": "postgresql+psycopg://127.0.0.1:9/none",
        "LIUHEN_S3__EMBEDDED": "false",
        "LIUHEN_S3__ENDPOINT": "127.0.0.1:9",
    }
    key = rt.ledger.key.verifier_key
    ok = run_cli("verify", out, "--key", key, "--json", env=offline, cwd=tmp_path)
    assert ok.returncode == 0, str(ok)
    assert ok.json()["ok"] is True and ok.json()["checked"] == 1
    assert not (tmp_path / "nowhere").exists()  # no home was even made
    _, stranger = generate_signer_key(settings.log.origin)
    bad = run_cli("verify", out, "--key", stranger, "--json", env=offline, cwd=tmp_path)
    assert bad.returncode == 1, str(bad)
    assert {f["file"] for f in bad.json()["failures"]} >= {"data/log/checkpoint"}
    assert all(set(f) == {"file", "code", "message"} for f in bad.json()["failures"])
    broken = tmp_path / "broken.zip"
    broken.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    cut = run_cli("verify", broken, "--key", key, "--json", env=offline, cwd=tmp_path)
    assert cut.returncode == 1, str(cut)
    assert cut.json()["failures"][0]["file"] == "broken.zip"
    assert cut.json()["failures"][0]["code"] == "package_error"
    unknown = run_cli("export", "NO-SUCH-CASE", "-o", tmp_path / "x.zip", env=env, cwd=tmp_path)
    assert unknown.returncode == 4 and not (tmp_path / "x.zip").exists()
    del item


@SQLITE
def test_http_export_streams_a_package_that_verifies(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings, workers=0)) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        seal(rt, distinct_files(tmp_path / "in", 2)[0], CASE)
        key = rt.ledger.key.verifier_key
        reviewer = bearer(make_user(rt, "reviewer", "reviewer"))
        people.grant(rt.sessions, name="reviewer", case_id=CASE, until=None, actor="cli:test")
        stranger = bearer(make_user(rt, "stranger", "reviewer"))
        refused = client.post(f"/v1/cases/{CASE}/exports", headers=stranger)
        assert refused.status_code == 403  # no grant for this case: no package
        assert client.post(f"/v1/cases/{CASE}/exports").status_code == 401
        with client.stream("POST", f"/v1/cases/{CASE}/exports", headers=reviewer) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/zip"
            assert "XF-2026_0042-" in response.headers["content-disposition"]
            path = tmp_path / "http.zip"
            with path.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        report = verify_package(path, verifier_key=key)
        assert report.ok and report.checked == 1, report.failures
        with rt.sessions() as session:
            (item,) = repo.items_of_case(session, case_id=CASE)
            (event,) = [
                e for e in repo.custody_of(session, item_id=item.id) if e.action == "export"
            ]
        assert event.actor == "user:reviewer"
        assert event.details is not None
        assert event.details["package_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        missing = client.post("/v1/cases/NO-SUCH/exports", headers=reviewer)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        json.loads(missing.text)


@SQLITE
def test_a_changed_original_stops_the_export_and_leaves_no_file(
    rt: Runtime, tmp_path: Path
) -> None:
    item = seal(rt, distinct_files(tmp_path / "in", 1)[0], CASE)
    forged = rt.store.put_bytes(
        keys.original_key(item.sha256), b"forged bytes", content_type="application/octet-stream"
    )
    sql(rt, "UPDATE items SET version_id = :v WHERE id = :i", v=forged.version_id, i=item.item_id)
    out = tmp_path / "case.zip"
    threads = threading.active_count()
    with pytest.raises(HashMismatch, match=item.sha256):
        export_to_file(rt, case_id=CASE, actor="reviewer", output=out)
    assert threading.active_count() == threads  # the reader and hasher threads are gone
    assert list(tmp_path.glob("*.zip*")) == [] and list(tmp_path.glob(".case.zip*")) == []
    with rt.sessions() as session:
        assert all(e.action != "export" for e in repo.custody_of(session, item_id=item.item_id))


@SQLITE
def test_report_html_shows_items_times_places_problems_and_custody(
    rt: Runtime, exported: Exported
) -> None:
    with zipfile.ZipFile(exported.path) as zf:
        page = zf.read(f"{exported.top}/data/report.html").decode()
        photo_doc = json.loads(
            zf.read(f"{exported.top}/data/items/{exported.item_ids[0]}/metadata.json")
        )
    assert page.startswith("<!doctype html>") and "@media print" in page
    for item_id in exported.item_ids:
        assert page.count(item_id) >= 2  # its row and its custody timeline
    assert photo_doc["captured_at"] and photo_doc["captured_at_source"]
    assert photo_doc["captured_at"] in page
    assert f"source: {photo_doc['captured_at_source']}" in page
    if photo_doc["gps"]:
        assert f"{photo_doc['gps']['lat']}, {photo_doc['gps']['lon']}" in page
    for problem in photo_doc["problems"]:
        assert problem["code"] in page
    assert "<td>sealed</td>" in page and "XF-2026/0042" in page
    assert "<script" not in page


@SQLITE
def test_a_time_stamped_checkpoint_travels_with_its_token(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    (tmp_path / "tsa").mkdir()
    with local_tsa(tmp_path / "tsa") as tsa:
        settings = make_settings(log={"tsa_url": tsa.url, "tsa_roots": [tsa.dir / "ca.pem"]})
        rt = open_runtime(settings)
        try:
            seal(rt, distinct_files(tmp_path / "in", 1)[0], CASE)
            path = tmp_path / "stamped.zip"
            export_to_file(rt, case_id=CASE, actor="reviewer", output=path)
            key = rt.ledger.key.verifier_key
        finally:
            rt.close()
        report = verify_package(path, verifier_key=key)
        assert report.ok, report.failures
        out = tmp_path / "unzipped"
        with zipfile.ZipFile(path) as zf:
            zf.extractall(out)
            top = zf.namelist()[0].split("/")[0]
        folder = out / top
        assert (folder / "data/log/checkpoint.tsr").stat().st_size > 0
        guide = (folder / "data/VERIFY.md").read_text()
        (verify_ts,) = [c for c in _blocks(guide, "## 3a.").splitlines() if "ts -verify" in c]
        checked = subprocess.run(
            ["bash", "-c", verify_ts.replace("TSA-ROOT.pem", str(tsa.dir / "ca.pem"))],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked
    member = f"{top}/data/log/checkpoint.tsr"
    with zipfile.ZipFile(path) as zf:
        size = zf.getinfo(member).file_size
    flipped = tmp_path / "flipped.zip"
    _flip(path, flipped, member, size - 10)  # inside the token's signature
    assert "data/log/checkpoint.tsr" in _files(verify_package(flipped, verifier_key=key))


@SQLITE
def test_a_file_that_inflates_without_end_is_a_failure_not_a_crash(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged metadata.json that unzips to more than a file read whole may hold (a zip
    bomb: tiny in the zip): named, the verifier's memory left alone."""
    monkeypatch.setattr(package, "SMALL_MAX", 1024 * 1024)  # 1 MiB here; 64 MiB in use
    member = _member(exported, r"data/items/\w+/metadata\.json")
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(exported.path) as src, zipfile.ZipFile(forged, "w") as out:
        for n in src.namelist():
            data = b"{" + b" " * (4 * 1024 * 1024) + b"}" if n == member else src.read(n)
            out.writestr(n, data, compress_type=zipfile.ZIP_DEFLATED)
    assert forged.stat().st_size < exported.path.stat().st_size + 64 * 1024
    report = verify_package(forged, verifier_key=exported.key)
    assert not report.ok
    assert (member.split("/", 1)[1], "too_large") in {(f.file, f.code) for f in report.failures}


# --- what the checkpoint vouches for, and when an export counts (a review's findings) ----------


def _exports(rt: Runtime, item_id: str) -> int:
    with rt.sessions() as s:
        return sum(e.action == "export" for e in repo.custody_of(s, item_id=item_id))


def test_an_item_linked_after_the_packages_checkpoint_is_not_in_it(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is read a moment after the checkpoint is signed: an item linked in between
    came into the package with no leaf putting it in the case, and a metadata.json naming
    the case and derivatives the package could not prove."""
    inside = seal(rt, distinct_files(tmp_path / "a", 1)[0], "LATE-1")
    later = seal(rt, distinct_files(tmp_path / "b", 1)[0], "OTHER-2")
    real = rt.ledger.publish

    def publish_then_link() -> Any:
        signed = real()
        links.link(rt, item_id=later.item_id, case_id="LATE-1", reason="same scene",
                   actor="officer:o")  # fmt: skip
        return signed

    monkeypatch.setattr(rt.ledger, "publish", publish_then_link)
    path = tmp_path / "late.zip"
    result = export_to_file(rt, case_id="LATE-1", actor="reviewer:r", output=path)
    assert result.items == 1
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith("/metadata.json")]
        doc = json.loads(zf.read(meta))
    assert inside.item_id in meta and not any(later.item_id in n for n in names)
    assert all(e["log_index"] < result.checkpoint_size for e in doc["custody"])
    assert doc["case_ids"] == ["LATE-1"]
    assert verify_package(path, verifier_key=rt.ledger.key.verifier_key).ok


def test_a_leaf_row_unlike_the_signed_log_stops_the_export_before_a_byte(
    rt: Runtime, tmp_path: Path
) -> None:
    sealed = seal(rt, distinct_files(tmp_path / "a", 1)[0], "BAD-1")
    rt.ledger.publish()
    row = json.loads(sealed.leaf)
    forged = json.dumps({**row, "size": row["size"] + 1}, separators=(",", ":"), sort_keys=True)
    sql(rt, "UPDATE log_leaves SET data = :d WHERE idx = :i", d=forged, i=sealed.log_index)
    with pytest.raises(LogCorrupt):
        stream_export(rt, case_id="BAD-1", actor="reviewer:r")  # at once, nothing streamed


def test_a_package_that_does_not_reach_its_file_is_not_logged_as_exported(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = seal(rt, distinct_files(tmp_path / "a", 1)[0], "DISK-1")
    with pytest.raises(InvalidInput, match="folder"):
        export_to_file(rt, case_id="DISK-1", actor="reviewer:r", output=tmp_path)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device (test)")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        export_to_file(rt, case_id="DISK-1", actor="reviewer:r", output=tmp_path / "p.zip")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (tmp_path / "p.zip").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".partial"] == []
    assert _exports(rt, sealed.item_id) == 0
    export_to_file(rt, case_id="DISK-1", actor="reviewer:r", output=tmp_path / "p.zip")
    assert _exports(rt, sealed.item_id) == 1


def test_every_export_is_a_case_event_also_of_a_case_with_no_items(
    rt: Runtime, tmp_path: Path
) -> None:
    sealed = seal(rt, distinct_files(tmp_path / "a", 1)[0], "EMPTY-1")
    links.unlink(rt, item_id=sealed.item_id, case_id="EMPTY-1", reason="wrong case", actor="o")
    result = export_to_file(rt, case_id="EMPTY-1", actor="reviewer:r", output=tmp_path / "e.zip")
    assert result.items == 0
    with rt.sessions() as s:
        (event,) = [
            e for e in people_store.case_events(s, case_id="EMPTY-1") if e.action == "export"
        ]
    details = event.details or {}
    assert event.actor == "reviewer:r" and details["package_sha256"] == result.sha256
    assert details["items"] == []


def test_items_taken_out_of_the_case_are_listed_with_the_leaves_that_prove_it(
    rt: Runtime, tmp_path: Path
) -> None:
    """An officer unlinks a recording before the export: the reviewer still sees that it was
    in the case, when it left, by whom and why, each fact a proven leaf; not its bytes. A
    forger who edits the reason (and re-hashes the bag) is named."""
    kept = seal(rt, distinct_files(tmp_path / "a", 1)[0], "RM-1")
    gone = seal(rt, distinct_files(tmp_path / "b", 1)[0], "RM-1")
    back = seal(rt, distinct_files(tmp_path / "c", 1)[0], "OTHER-3")
    links.unlink(rt, item_id=gone.item_id, case_id="RM-1", reason="wrong case", actor="officer:o")
    for action in (links.link, links.unlink, links.link):  # out and in again: a member
        action(rt, item_id=back.item_id, case_id="RM-1", reason="same scene", actor="officer:p")
    path = tmp_path / "rm.zip"
    result = export_to_file(rt, case_id="RM-1", actor="reviewer:r", output=path)
    assert result.items == 2
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        top = names[0].split("/")[0]
        removed = json.loads(zf.read(f"{top}/{package.REMOVED}"))
        report_html = zf.read(f"{top}/data/report.html").decode()
        verify_md = zf.read(f"{top}/data/VERIFY.md").decode()
    assert not any(f"items/{gone.item_id}" in n for n in names)  # no bytes of it
    assert [r["item_id"] for r in removed] == [gone.item_id]
    (r,) = removed
    assert (r["sha256"], r["sealed_in_case"]) == (gone.sha256, True)
    assert [(e["action"], e["actor"], e["reason"]) for e in r["events"]] == [
        ("unlink", "officer:o", "wrong case")
    ]
    for idx in (r["log_index"], r["events"][0]["log_index"]):
        assert f"{top}/data/log/leaves/{idx}.json" in names
        assert f"{top}/data/log/proofs/{idx}.tlog-proof" in names
    assert "Taken out of this case" in report_html and "wrong case" in report_html
    assert "1 item(s) were in this case once" in verify_md
    report = verify_package(path, verifier_key=rt.ledger.key.verifier_key)
    assert report.ok and (report.checked, report.removed) == (2, 1), report.failures
    said = run_cli("verify", path, "--key", rt.ledger.key.verifier_key,
                   env=cli_env(tmp_path / "nowhere"), cwd=tmp_path)  # fmt: skip
    assert said.returncode == 0 and "checked 2 item(s) and 1 taken out of the case" in said.stdout

    def edit_reason(files: dict[str, bytes]) -> None:
        member = f"{top}/{package.REMOVED}"
        files[member] = files[member].replace(b'"wrong case"', b'"duplicate upload"')

    forged = tmp_path / "forged.zip"
    exported = Exported(path, result, rt.ledger.key.verifier_key, [], top)
    _forge(exported, forged, edit_reason)
    bad = verify_package(forged, verifier_key=rt.ledger.key.verifier_key)
    assert {(f.file, f.code) for f in bad.failures} == {
        (f"{package.REMOVED} ({gone.item_id})", "removed_vs_leaf")
    }, bad.failures

    def pretend_still_out(files: dict[str, bytes]) -> None:  # an item of the case listed too
        member = f"{top}/{package.REMOVED}"
        doc = json.loads(files[member])
        doc.append({**doc[0], "item_id": kept.item_id})
        files[member] = json.dumps(doc).encode()

    def drop_the_unlink(files: dict[str, bytes]) -> None:  # its leaf stays in the package
        member = f"{top}/{package.REMOVED}"
        doc = json.loads(files[member])
        doc[0]["events"] = []
        files[member] = json.dumps(doc).encode()

    _forge(exported, forged, drop_the_unlink)
    codes = {f.code for f in verify_package(forged, verifier_key=exported.key).failures}
    assert codes == {"removed_in_case", "removed_event"}, codes

    _forge(exported, forged, pretend_still_out)
    codes = {f.code for f in verify_package(forged, verifier_key=exported.key).failures}
    assert "removed_event" in codes and "removed_in_case" in codes
