"""A case's export package (DESIGN.md, "Package"): a zipped BagIt bag that a reviewer checks
offline with ``sha256sum``, ``openssl`` and the published log key, or ``liuhen verify``.

The zip is streamed: every entry is written through as it is read (originals straight from
the store, re-hashed on the way: a changed original stops the export), hashed for the bag's
manifests as it is written, and the package itself is hashed as it leaves. Nothing is held
whole in memory; entries over 2 GiB get ZIP64 headers.

Every leaf concerning the case (each item's item leaf, derivative leaves and custody leaves)
goes in with its C2SP tlog-proof against ONE checkpoint, signed just before. The export is
itself a custody event of each item: once the package is complete, an ``export`` custody leaf
per item names the package's SHA-256 (it is logged after the package, so a later receipt,
``liuhen receipt`` or ``liuhen verify``, proves it; the package cannot hold its own hash).
"""

from __future__ import annotations

import hashlib
import html
import json
import mimetypes
import os
import queue
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ingest import catalog, custody
from ingest.manifest import check_case_id
from ingest.retrieve import Target, verified_stream
from ingest.runtime import Runtime
from integrity import package as bag
from storage import keys
from storage import repository as repo
from storage import verify_queries as q
from storage.db import transaction
from storage.tables import Item

__all__ = ["ExportResult", "PackageStream", "export_to_file", "folder_name", "stream_export"]

EXPORT_ACTION = "export"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXT = re.compile(r"[a-z0-9]{1,8}")


@dataclass(frozen=True)
class ExportResult:
    folder: str
    """The bag's top-level folder inside the zip."""
    sha256: str
    """SHA-256 of the whole zip, as logged in each item's ``export`` custody event."""
    size: int
    items: int
    checkpoint_size: int


def folder_name(case_id: str, now: datetime) -> str:
    """``<case_id>-<time>`` made safe for any file system (``/`` and the like become ``_``)."""
    safe = _UNSAFE.sub("_", case_id).strip("._") or "case"
    return f"{safe}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class _BackgroundHash:
    """SHA-256 computed in a thread of its own (hashlib lets go of the GIL on big blocks), so
    the package's hash costs no time on the path from the store to the zip. At most
    ``depth`` blocks wait to be hashed."""

    def __init__(self, depth: int = 8) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="export-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._hash.update(block)

    def update(self, block: bytes) -> None:
        self._queue.put(block)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._hash.hexdigest()


def _read_ahead(chunks: Iterator[bytes], depth: int = 4) -> Iterator[bytes]:
    """``chunks``, read (and re-hashed) by a thread up to ``depth`` chunks ahead, so that the
    store's reads overlap the writing. Errors come out where they happened; a consumer that
    stops early stops the reader."""
    box: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bytes | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
            put((None, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((None, e))

    reader = threading.Thread(target=run, name="export-read", daemon=True)
    reader.start()
    try:
        while True:
            chunk, error = box.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        reader.join(timeout=30)


class _Sink:
    """Where zipfile writes: it keeps what was written until drained and hashes all of it.
    It can tell but not seek, so zipfile streams (sizes in data descriptors)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._hash = _BackgroundHash()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class _Entry:
    """One item's part of the plan."""

    item: Item
    document: dict[str, Any]
    original: Target
    original_name: str
    derivatives: list[tuple[str, Target]]
    custody: list[str]


class PackageStream:
    """The package's bytes, in order (``for chunk in stream``); ``result`` once exhausted."""

    def __init__(self, rt: Runtime, *, case_id: str, actor: str, now: datetime) -> None:
        check_case_id(case_id, rt.settings.case_id_pattern)
        self.rt, self.case_id, self.actor, self.now = rt, case_id, actor, now
        self.folder = folder_name(case_id, now)
        self.result: ExportResult | None = None
        # Plan first (fails before a byte is sent for an unknown case or a corrupt log).
        self.signed = rt.ledger.publish()
        size = self.signed.checkpoint.size
        with rt.sessions() as session:
            repo.get_case(session, case_id=case_id)
            items = [i for i in repo.items_of_case(session, case_id=case_id) if i.log_index < size]
            self.tsr = repo.get_checkpoint(session, size=size).tsr if size else None
            leaves = q.leaves_of_items(session, item_ids=[i.id for i in items], below=size)
            self.entries = [self._entry(session, i, leaves) for i in items]
        self.leaves = [(leaf.idx, leaf.data) for leaf in leaves]

    def _entry(self, session: Any, item: Item, leaves: list[Any]) -> _Entry:
        original = Target(
            item.id,
            "original",
            item.object_key,
            item.version_id,
            item.sha256,
            item.size,
            item.media_type,
        )
        derivatives = []
        for d in repo.derivatives_of(session, item_id=item.id):
            name = keys.derivative_file_name(d.object_key) or f"{d.role}.bin"
            if d.log_index < self.signed.checkpoint.size:
                target = Target(
                    item.id, d.role, d.object_key, d.version_id, d.sha256, d.size, d.media_type
                )
                derivatives.append((name, target))
        return _Entry(
            item=item,
            document=catalog.item_document(session, item),
            original=original,
            original_name=f"{bag.ORIGINAL}.{_original_ext(item)}",
            derivatives=derivatives,
            custody=[
                leaf.data for leaf in leaves if leaf.item_id == item.id and leaf.kind == "custody"
            ],
        )

    def __iter__(self) -> Iterator[bytes]:
        sink = _Sink()
        manifest: list[tuple[str, str]] = []
        payload_bytes = 0
        stamp = self.now.astimezone(UTC).timetuple()[:6]
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:

            def add(
                rel: str, chunks: Iterator[bytes] | bytes, size: int, sha256: str | None = None
            ) -> Iterator[bytes]:
                """Write one entry. ``sha256``: the hash ``chunks`` is checked against as it
                ends (a verified stream), so it is not computed twice."""
                nonlocal payload_bytes
                info = zipfile.ZipInfo(f"{self.folder}/{rel}", date_time=stamp)
                info.file_size = size  # decides ZIP64 before a byte is written
                info.external_attr = 0o644 << 16
                h, written = hashlib.sha256(), 0
                with zf.open(info, "w") as out:
                    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                        out.write(chunk)
                        if sha256 is None:
                            h.update(chunk)
                        written += len(chunk)
                        yield sink.drain()
                digest = sha256 or h.hexdigest()
                if rel.startswith("data/"):
                    manifest.append((digest, rel))
                    payload_bytes += written
                else:
                    tags.append((digest, rel))
                yield sink.drain()

            def text(rel: str, body: str | bytes) -> Iterator[bytes]:
                raw = body.encode() if isinstance(body, str) else body
                return add(rel, raw, len(raw))

            tags: list[tuple[str, str]] = []
            for e in self.entries:
                base = f"{bag.ITEMS}/{e.item.id}"
                for name, target in [(e.original_name, e.original), *e.derivatives]:
                    stream = _read_ahead(verified_stream(self.rt, target))
                    yield from add(f"{base}/{name}", stream, target.size, target.sha256)
                doc = json.dumps(e.document, ensure_ascii=False, indent=2, sort_keys=True)
                yield from text(f"{base}/{bag.METADATA}", doc + "\n")
                yield from text(f"{base}/{bag.CUSTODY}", "".join(c + "\n" for c in e.custody))
            for idx, data in self.leaves:
                yield from text(f"{bag.LEAVES}/{idx}.json", data)
                proof = self.rt.ledger.receipt_under(idx, data=data, signed=self.signed)
                yield from text(f"{bag.PROOFS}/{idx}.tlog-proof", proof)
            yield from text(bag.CHECKPOINT, self.signed.note)
            if self.tsr:
                yield from text(bag.TIMESTAMP, self.tsr)
            key = self.rt.ledger.key
            yield from text(bag.KEY_TXT, key.verifier_key + "\n")
            yield from text(bag.KEY_PEM, _pem(key.verifier.public_key))
            yield from text("data/VERIFY.md", _verify_md(self, key.verifier_key))
            yield from text("data/report.html", _report_html(self))
            yield from text(bag.BAGIT, bag.BAGIT_TEXT)
            info = [
                ("Bagging-Date", f"{self.now.astimezone(UTC):%Y-%m-%d}"),
                ("External-Identifier", self.case_id),
                ("Payload-Oxum", f"{payload_bytes}.{len(manifest)}"),
                ("Liuhen-Case", self.case_id),
                ("Liuhen-Exporter", self.actor),
                ("Liuhen-Exported-At", self.now.astimezone(UTC).isoformat()),
                ("Liuhen-Checkpoint-Size", str(self.signed.checkpoint.size)),
                ("Liuhen-Log-Origin", self.signed.checkpoint.origin),
                ("Liuhen-Log-Key", key.verifier_key),
            ]
            yield from text(bag.BAG_INFO, "".join(f"{k}: {_one_line(v)}\n" for k, v in info))
            yield from text(bag.MANIFEST, "".join(f"{h}  {p}\n" for h, p in manifest))
            tagged = "".join(f"{h}  {p}\n" for h, p in tags)
            yield from text(bag.TAG_MANIFEST, tagged)
        self.result = ExportResult(
            folder=self.folder,
            sha256=sink.hexdigest(),
            size=sink.size,
            items=len(self.entries),
            checkpoint_size=self.signed.checkpoint.size,
        )
        self._log_export(self.result)  # logged before the last bytes are handed over
        yield sink.drain()

    def _log_export(self, result: ExportResult) -> None:
        details = {
            "case_id": self.case_id,
            "package": f"{result.folder}.zip",
            "package_sha256": result.sha256,
            "checkpoint_size": result.checkpoint_size,
        }
        with transaction(self.rt.sessions) as session:
            for e in self.entries:
                item = repo.get_item(session, item_id=e.item.id)
                custody.record(
                    session,
                    self.rt.ledger,
                    item=item,
                    action=EXPORT_ACTION,
                    actor=self.actor,
                    now=datetime.now(UTC),
                    details=details,
                )


def stream_export(
    rt: Runtime, *, case_id: str, actor: str, now: datetime | None = None
) -> PackageStream:
    """The package of ``case_id`` as a stream of bytes (HTTP). Raises NotFound at once for
    an unknown case; a changed original stops the stream (HashMismatch)."""
    return PackageStream(rt, case_id=case_id, actor=actor, now=now or datetime.now(UTC))


def export_to_file(
    rt: Runtime, *, case_id: str, actor: str, output: Path, now: datetime | None = None
) -> ExportResult:
    """Write the package to ``output`` (atomically: nothing is left there on failure)."""
    stream = stream_export(rt, case_id=case_id, actor=actor, now=now)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with tmp.open("wb") as f:
            _copy(stream, f)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    assert stream.result is not None  # noqa: S101 - set when the stream is exhausted
    return stream.result


def _copy(chunks: PackageStream, out: IO[bytes]) -> None:
    for chunk in chunks:
        if chunk:
            out.write(chunk)


def _original_ext(item: Item) -> str:
    suffix = PurePosixPath(item.original_name or "").suffix.lstrip(".").lower()
    if _EXT.fullmatch(suffix):
        return suffix
    guessed = (mimetypes.guess_extension(item.media_type) or "").lstrip(".")
    return guessed if _EXT.fullmatch(guessed) else "bin"


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _pem(public_key: bytes) -> bytes:
    key = Ed25519PublicKey.from_public_bytes(public_key)
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


# --- the documents for people -------------------------------------------------------------------


def _verify_md(stream: PackageStream, verifier_key: str) -> str:
    cp = stream.signed.checkpoint
    return VERIFY_MD.format(
        case=stream.case_id,
        folder=stream.folder,
        size=cp.size,
        origin=cp.origin,
        key=verifier_key,
        items=len(stream.entries),
    )


VERIFY_MD = """\
# How to check this package by hand

Case `{case}`: {items} item(s), every log leaf about them, each proven against one signed
checkpoint of the log `{origin}` (size {size}). You need `sha256sum`, `openssl` (3.0 or
later) and Python 3; nothing of liuhen, no network. Work in the bag folder `{folder}/`.

## 1. Nothing changed since it was packed

    sha256sum -c manifest-sha256.txt
    sha256sum -c tagmanifest-sha256.txt

Every line must say `OK`. This is the BagIt (RFC 8493) check; `bagit.py --validate .` does
the same. It shows the package is whole, not that liuhen's log holds it: that is steps 2-4.

## 2. The log key is the agency's

`data/log/log-key.txt` is the log's verifier key (C2SP signed-note format):
`{key}`.
Compare it with the key the agency publishes (out of band: its web site, a letter). A key
that came only inside this package proves nothing by itself. Then check that
`data/log/log-key.pem` is the same Ed25519 key (both commands print the same 32 bytes):

    cut -d+ -f3- data/log/log-key.txt | base64 -d | tail -c 32 | od -An -tx1
    openssl pkey -pubin -in data/log/log-key.pem -outform DER | tail -c 32 | od -An -tx1

## 3. The checkpoint is signed by that key

`data/log/checkpoint` is a C2SP signed note: its text (origin, tree size, base64 root hash,
each line ending in a newline), a blank line, then signature lines `— <name> <base64>`, where
the base64 holds a 4-byte key ID and the 64-byte Ed25519 signature of the text. Cut them
apart into a scratch folder and let openssl check the signature with the PEM key:

    t=$(mktemp -d)
    sed '/^$/,$d' data/log/checkpoint > "$t/checkpoint.msg"
    sed -n 's/^— [^ ]* //p' data/log/checkpoint | head -n 1 | base64 -d \\
        | tail -c 64 > "$t/checkpoint.sig"
    openssl pkeyutl -verify -pubin -inkey data/log/log-key.pem -rawin \\
        -in "$t/checkpoint.msg" -sigfile "$t/checkpoint.sig"

It must print `Signature Verified Successfully`. When `checkpoint.tsr` is present it is an
RFC 3161 time-stamp of the whole checkpoint file:
`openssl ts -reply -in checkpoint.tsr -text` shows the time; `openssl ts -verify -data
checkpoint -in checkpoint.tsr -CAfile TSA-ROOT.pem` checks it against the TSA's root.

## 4. Every leaf is in that checkpoint

`data/log/leaves/<index>.json` is the exact leaf data (RFC 9162 leaf hash:
SHA-256 of a 0x00 byte then the file), `data/log/proofs/<index>.tlog-proof` its C2SP
tlog-proof (a header line, `index N`, the base64 proof hashes, a blank line, the same signed
checkpoint). A leaf's hash by hand: `(printf '\\000'; cat data/log/leaves/7.json) | sha256sum`.
This script (standard library only) checks every proof against the checkpoint's root:

```python
import base64, hashlib, pathlib, sys
log = pathlib.Path("data/log")
note = (log / "checkpoint").read_text()
origin, size, root = note.split("\\n")[:3]
size, root = int(size), base64.b64decode(root)
H = lambda b: hashlib.sha256(b).digest()
bad = 0
for leaf in sorted((log / "leaves").glob("*.json")):
    index = int(leaf.stem)
    head, _, rest = (log / "proofs" / f"{{index}}.tlog-proof").read_text().partition("\\n\\n")
    lines = head.split("\\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[1] == f"index {{index}}", leaf
    assert rest == note, f"{{leaf}}: the proof is against another checkpoint"
    # RFC 9162 section 2.1.3.2
    fn, sn, r = index, size - 1, H(b"\\0" + leaf.read_bytes())
    for p in (base64.b64decode(x) for x in lines[2:]):
        if sn == 0:
            r = None
            break
        if fn & 1 or fn == sn:
            r = H(b"\\1" + p + r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = H(b"\\1" + r + p)
        fn, sn = fn >> 1, sn >> 1
    if r != root or sn != 0:
        bad += 1
        print("NOT IN THE LOG:", leaf)
print(f"{{bad}} bad proof(s)")
sys.exit(1 if bad else 0)
```

## 5. The files are the logged ones, and every custody chain holds

For each `data/items/<id>/`: `metadata.json` names its item leaf (`log_index`); that leaf's
`sha256` and `size` are those of `original.*`; each derivative file (`proxy.mp4`,
`thumb-000.jpg`, ...) has a derivative leaf with its `sha256`, `role` and the original's
`parent_sha256`. `custody.jsonl` holds the item's custody leaves in log order, each one a
file in `data/log/leaves/`; the first one's `prev` is the leaf hash of the item leaf, every
other's is the leaf hash of the line before it.

`liuhen verify PACKAGE.zip --key '<the published key>'` does all of the above and names the
file of anything that does not hold (`integrity/package.py` in liuhen, a few hundred lines).
This export is itself logged: after the package was written an `export` custody leaf per item
recorded the zip's SHA-256; ask for a fresh receipt of it to prove that.
"""


def _report_html(stream: PackageStream) -> str:
    e = html.escape
    rows, timelines = [], []
    for entry in stream.entries:
        d = entry.document
        gps = d.get("gps")
        place = f"{gps['lat']}, {gps['lon']}" if gps else "—"
        if d.get("bbox"):
            place += f"<br><small>track bbox {e(', '.join(map(str, d['bbox'])))}</small>"
        problems = "<br>".join(
            e(f"{p.get('stage')}/{p.get('code')}: {p.get('message')}") for p in d["problems"]
        )
        rows.append(
            "<tr>"
            f"<td><code>{e(d['id'])}</code><br>{e(d.get('original_name') or '')}</td>"
            f"<td>{e(d['media_type'])}<br>{d['size']} bytes<br>"
            f"<code class=h>{e(d['sha256'])}</code></td>"
            f"<td>{e(d.get('captured_at') or '—')}<br><small>source: "
            f"{e(d.get('captured_at_source') or 'unknown')}</small></td>"
            f"<td>{e(d.get('received_at') or '')}<br><small>logged: "
            f"{e(d.get('logged_at') or '—')}</small></td>"
            f"<td>{place}</td><td>{problems or '—'}</td><td>{e(d['status'])}</td></tr>"
        )
        events = "".join(
            f"<tr><td>{e(c.get('at') or '')}</td><td>{e(c['action'])}</td>"
            f"<td>{e(c['actor'])}</td><td>{e(c.get('reason') or '')}</td>"
            f"<td>{c['log_index']}</td></tr>"
            for c in d["custody"]
            if c["log_index"] < stream.signed.checkpoint.size
        )
        timelines.append(
            f"<h3><code>{e(d['id'])}</code></h3><table><tr><th>at (UTC)</th><th>action</th>"
            f"<th>actor</th><th>reason</th><th>leaf</th></tr>{events}</table>"
        )
    cp = stream.signed.checkpoint
    return REPORT_HTML.format(
        case=e(stream.case_id),
        exporter=e(stream.actor),
        at=e(stream.now.astimezone(UTC).isoformat()),
        origin=e(cp.origin),
        size=cp.size,
        rows="".join(rows),
        timelines="".join(timelines),
    )


REPORT_HTML = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Case {case}: evidence export</title>
<style>
body {{ font: 11pt/1.4 sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #999; padding: .3em .5em; vertical-align: top; text-align: left; }}
code.h {{ font-size: 8pt; word-break: break-all; }}
@media print {{ body {{ margin: 0; }} h2 {{ page-break-before: always; }} }}
</style></head><body>
<h1>Case {case}</h1>
<p>Exported {at} by {exporter}. Log <code>{origin}</code>, checkpoint of {size} leaves.
Check this package as <code>data/VERIFY.md</code> says before relying on it.</p>
<h2>Items</h2>
<table><tr><th>item</th><th>original</th><th>captured (UTC)</th><th>received</th>
<th>place</th><th>problems</th><th>status</th></tr>{rows}</table>
<h2>Custody timeline</h2>
{timelines}
</body></html>
"""
