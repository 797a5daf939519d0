"""The export package's documents for people: ``VERIFY.md`` (how to check it by hand, every
command of it run by the tests) and the printable ``report.html``."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from integrity.note import Checkpoint


def verify_md(
    *,
    case_id: str,
    folder: str,
    checkpoint: Checkpoint,
    verifier_key: str,
    items: int,
    removed: int = 0,
) -> str:
    """``data/VERIFY.md``: how a reviewer checks the package by hand."""
    return VERIFY_MD.format(
        case=case_id,
        folder=folder,
        size=checkpoint.size,
        origin=checkpoint.origin,
        key=verifier_key,
        items=items,
        removed=REMOVED_MD.format(removed=removed) if removed else "",
    )


REMOVED_MD = """
{removed} item(s) were in this case once and were taken out before it was exported. Their
bytes are not here; `data/removed.json` lists each with what its leaves say (its item leaf,
then every `link` and `unlink` of this case, with who, when and why), and those leaves are
in `data/log/leaves` with their proofs like all others.
"""


VERIFY_MD = """\
# How to check this package by hand

Case `{case}`: {items} item(s), every log leaf about them, each proven against one signed
checkpoint of the log `{origin}` (size {size}). You need `sha256sum`, `openssl` (3.0 or
later) and Python 3; nothing of liuhen, no network. Work in the bag folder `{folder}/`.
{removed}
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

It must print `Signature Verified Successfully`.

## 3a. When it was signed (if `data/log/checkpoint.tsr` is there)

`checkpoint.tsr` is an RFC 3161 time-stamp of the whole checkpoint file: the first command
shows the time, the second checks the token against the time-stamp authority's root
certificate (which you get from the authority, not from this package):

    openssl ts -reply -in data/log/checkpoint.tsr -text
    openssl ts -verify -data data/log/checkpoint -in data/log/checkpoint.tsr -CAfile TSA-ROOT.pem

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


def report_html(
    *,
    case_id: str,
    exporter: str,
    at: datetime,
    checkpoint: Checkpoint,
    documents: list[dict[str, Any]],
    removed: list[dict[str, Any]] | None = None,
) -> str:
    """``data/report.html``: items, times with their sources, places, problems, custody, and
    the items taken out of the case."""
    e = html.escape
    rows, timelines = [], []
    for d in documents:
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
            if c["log_index"] < checkpoint.size
        )
        timelines.append(
            f"<h3><code>{e(d['id'])}</code></h3><table><tr><th>at (UTC)</th><th>action</th>"
            f"<th>actor</th><th>reason</th><th>leaf</th></tr>{events}</table>"
        )
    return REPORT_HTML.format(
        case=e(case_id),
        exporter=e(exporter),
        at=e(at.astimezone(UTC).isoformat()),
        origin=e(checkpoint.origin),
        size=checkpoint.size,
        rows="".join(rows),
        timelines="".join(timelines),
        removed=_removed_html(removed or []),
    )


def _removed_html(removed: list[dict[str, Any]]) -> str:
    if not removed:
        return ""
    e = html.escape
    rows = []
    for r in removed:
        events = "<br>".join(
            e(f"{v['at']} {v['action']} by {v['actor']}: {v.get('reason') or '—'}")
            + f" <small>(leaf {v['log_index']})</small>"
            for v in r["events"]
        )
        sealed = "sealed into the case<br>" if r["sealed_in_case"] else ""
        rows.append(
            f"<tr><td><code>{e(r['item_id'])}</code><br>{e(r.get('original_name') or '')}</td>"
            f"<td>{e(r['media_type'])}<br>{r['size']} bytes<br>"
            f"<code class=h>{e(r['sha256'])}</code></td>"
            f"<td>{sealed}{events}</td></tr>"
        )
    return (
        "<h2>Taken out of this case</h2><p>These items were in the case once; their bytes "
        "are not in this package (<code>data/removed.json</code>).</p>"
        "<table><tr><th>item</th><th>original</th><th>in and out of the case (UTC)</th></tr>"
        + "".join(rows)
        + "</table>"
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
{removed}
</body></html>
"""
