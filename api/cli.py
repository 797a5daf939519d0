"""``liuhen``: the command line. With ``--json`` a command prints exactly one JSON document on
stdout; progress and logs go to stderr. Errors exit non-zero (see ``api.errors.exit_code``).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from api import logs
from api.errors import exit_code, problem
from configs.errors import SystemRefused
from configs.settings import load_settings
from ingest.errors import IntakeRefused, ManifestError
from ingest.manifest import Manifest, check_file_name, kept_file_name, path_text
from integrity.errors import LiuhenError

if TYPE_CHECKING:
    from configs.settings import Settings
    from ingest.runtime import Runtime

# Heavy modules (SQLAlchemy, minio, media tools) are imported inside the commands that use
# them, so that ``liuhen --help`` answers at once.

app = typer.Typer(
    name="liuhen",
    help=(
        "留痕 liuhen: seal body-camera evidence into WORM storage, log it, index it by case."
        "\n\nWhere: LIUHEN_HOME (default ./var) holds the embedded index, object store and"
        " keys; LIUHEN_CONFIG names a profile (configs/production.toml for a deployment);"
        " any setting as LIUHEN_SECTION__NAME (e.g. LIUHEN_DATABASE__URL)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log_app = typer.Typer(
    help="The tamper-evident log: its signer key (init-key), verifier key, latest checkpoint.",
    no_args_is_help=True,
)
app.add_typer(log_app, name="log")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ActorOpt = Annotated[
    str | None,
    typer.Option("--actor", envvar="LIUHEN_ACTOR", help="Who is acting (logged as custody)."),
]


def check_is_file(path: Path) -> None:
    """A file to seal or push, or what it is instead (before anything is sent)."""
    if path.is_dir():
        raise IntakeRefused(f"{path}: a folder; give the files in it")
    if not path.is_file():
        raise IntakeRefused(f"{path}: no such file")


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


def _emit(doc: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        human()


def _fail(error: LiuhenError, as_json: bool, *, partial: dict[str, Any] | None = None) -> NoReturn:
    doc = problem(error)
    if as_json:
        out = {**(partial or {}), "error": doc}
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    for item in (partial or {}).get("items", []):
        typer.echo(f"liuhen: sealed before the error: {item['id']} ({item['file']})", err=True)
    typer.echo(f"liuhen: {doc['title']}: {error}", err=True)
    raise typer.Exit(exit_code(error))


def _print_case(doc: dict[str, Any]) -> None:
    typer.echo(f"case {doc['case_id']}: {len(doc['items'])} item(s)")
    for i in doc["items"]:
        typer.echo(
            f"  {i['id']}  {i['media_type']:<18} {i['status']:<13} "
            f"{i['captured_at'] or '-':<27} {i['original_name'] or ''}"
        )


@contextmanager
def _runtime(as_json: bool) -> Iterator[Runtime]:
    from ingest.runtime import runtime

    try:
        with runtime(load_settings()) as rt:
            yield rt
    except LiuhenError as e:
        _fail(e, as_json)


def _setup_logging() -> None:
    level = os.environ.get("LIUHEN_LOG_LEVEL", "WARNING").upper()
    known = level in logging.getLevelNamesMapping()
    logging.basicConfig(
        level=level if known else "WARNING",
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not known:
        logging.getLogger("liuhen").warning("LIUHEN_LOG_LEVEL=%r is no level: WARNING used", level)
    logs.apply_format()  # LIUHEN_LOG_FORMAT=json


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Files to seal as evidence.")],
    case: Annotated[list[str] | None, typer.Option("--case", help="Case ID (repeatable).")] = None,
    device: Annotated[str | None, typer.Option(help="Device ID that recorded the files.")] = None,
    officer: Annotated[str | None, typer.Option(help="Officer ID (警号).")] = None,
    track: Annotated[
        Path | None, typer.Option(help="GPS track (NMEA 0183 or GPX) recorded alongside.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Return after the pipeline finished.")] = False,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Seal FILES into WORM storage, link them to cases, print their receipts."""
    from ingest.intake import seal_file

    who = _actor(actor)
    results: list[dict[str, Any]] = []
    try:  # refuse bad arguments before anything is sealed
        for path in [*files, *([track] if track else [])]:
            check_is_file(path)
            check_file_name(kept_file_name(path.name))
    except ValueError as e:
        _fail(ManifestError(str(e)), as_json)
    except LiuhenError as e:
        _fail(e, as_json)
    with _runtime(as_json) as rt:
        try:
            for path in files:
                manifest = Manifest(
                    device_id=device,
                    officer_id=officer,
                    case_ids=tuple(case or ()),
                    file_name=kept_file_name(path.name),  # bytes that are not UTF-8, readably
                )
                sealed = seal_file(rt, path, manifest, actor=who)
                receipt = rt.ledger.receipt(sealed.log_index)
                results.append({**sealed.document(receipt=receipt), "file": path_text(path)})
                said = "already sealed as" if sealed.duplicate else "sealed"
                typer.echo(f"{said} {path} → {sealed.item_id}", err=True)
            if track is not None or wait:
                # The pipeline pulls in the media tools (OpenCV, PyAV): only when asked.
                from ingest.pipeline_hooks import after_ingest

                after_ingest(rt, results, track=track, wait=wait, actor=who)
        except LiuhenError as e:
            # What was sealed before the error stays sealed: say so, with its receipts.
            _fail(e, as_json, partial={"items": results})

    def human() -> None:
        for r in results:
            dup = " (already sealed)" if r["duplicate"] else ""
            typer.echo(
                f"{r['id']}  {r['sha256']}  {r['size']:>12}  {r['status']}{dup}  {r['file']}"
            )

    _emit({"items": results}, as_json, human)


@app.command()
def item(
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Show one item: hashes, status, problems, time, place, derivatives, custody."""
    from ingest import catalog

    with _runtime(as_json) as rt:
        try:
            doc = catalog.view_item(rt, item_id, actor=_actor(actor))
        except LiuhenError as e:
            _fail(e, as_json)

    def human() -> None:
        for key in (
            "id",
            "sha256",
            "size",
            "media_type",
            "status",
            "case_ids",
            "captured_at",
            "captured_at_source",
            "received_at",
            "gps",
            "log_index",
        ):
            typer.echo(f"{key:>20}: {doc[key]}")
        for p in doc["problems"]:
            typer.echo(f"{'problem':>20}: [{p['stage']}/{p['code']}] {p['message']}")
        for d in doc["derivatives"]:
            typer.echo(f"{'derivative':>20}: {d['role']} {d['sha256']} {d['size']}")

    _emit(doc, as_json, human)


@app.command("case")
def case_cmd(
    case_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """List the items of a case."""
    from ingest import catalog

    with _runtime(as_json) as rt:
        try:
            with rt.sessions() as session:
                doc = catalog.case_document(session, case_id)
        except LiuhenError as e:
            _fail(e, as_json)

    _emit(doc, as_json, lambda: _print_case(doc))


@app.command()
def get(
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the bytes.")],
    derivative: Annotated[
        str | None, typer.Option(help="A derivative role (proxy, thumb-000, ...).")
    ] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Write the original (or a derivative) to a file; exit non-zero if its hash is wrong."""
    from ingest.errors import InvalidInput
    from ingest.retrieve import log_read, resolve, write_to_file

    # Before anything is read or logged: a download that cannot land is no download.
    if output.is_dir():
        _fail(InvalidInput(f"-o {output} is a folder: name the file to write"), as_json)
    if not output.parent.is_dir():
        _fail(InvalidInput(f"-o {output}: the folder {output.parent} does not exist"), as_json)
    with _runtime(as_json) as rt:
        try:
            target = resolve(rt, item_id, derivative)
            log_read(rt, target, action="download", actor=_actor(actor))
            write_to_file(rt, target, output)
        except LiuhenError as e:
            _fail(e, as_json)
    doc = {
        "id": target.item_id,
        "role": target.role,
        "sha256": target.sha256,
        "size": target.size,
        "output": str(output),
    }
    _emit(doc, as_json, lambda: typer.echo(f"wrote {output} ({target.size} bytes, SHA-256 ok)"))


@app.command()
def receipt(
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Print a fresh receipt (C2SP tlog-proof) for an item's leaf, against the latest checkpoint."""
    from ingest import catalog

    with _runtime(as_json) as rt:
        try:
            doc = catalog.item_receipt(rt, item_id)
        except LiuhenError as e:
            _fail(e, as_json)
    _emit(doc, as_json, lambda: print(doc["receipt"], end=""))  # noqa: T201


@log_app.command("key")
def log_key(as_json: JsonOpt = False) -> None:
    """Print the log's verifier key (C2SP note verifier-key string)."""
    with _runtime(as_json) as rt:
        vkey = rt.ledger.key.verifier_key
    _emit({"verifier_key": vkey, "origin": rt.ledger.origin}, as_json, lambda: typer.echo(vkey))


@log_app.command("checkpoint")
def log_checkpoint(
    cover: Annotated[
        bool,
        typer.Option(
            "--cover",
            help="First sign one covering every leaf so far, if the latest does not (custody"
            " of reads since the last seal); this reaches the object store.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the latest signed checkpoint (C2SP tlog-checkpoint in a signed note).

    Leaves logged after it (views, downloads, verifications by index-only commands) are
    covered by the next seal, by a running ``liuhen serve`` within seconds, or by --cover.
    """
    with _runtime(as_json) as rt:
        try:
            # Signing a new one mirrors it to the store: only when asked, or none exists yet.
            latest = None if cover else rt.ledger.latest_checkpoint()
            signed = latest or rt.ledger.publish()
        except LiuhenError as e:
            _fail(e, as_json)
    doc = {"size": signed.checkpoint.size, "note": signed.note}
    _emit(doc, as_json, lambda: print(signed.note, end=""))  # noqa: T201


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Serve the HTTP API (and run the pipeline workers) until interrupted.

    With the embedded profile the home's SeaweedFS is started (or joined) and kept running
    for as long as this serves.
    """
    from ingest.logkey import load_log_key

    try:
        settings = load_settings()
        if settings.profile != "embedded":  # before the server starts: one clear line, 78
            load_log_key(settings)
    except LiuhenError as e:
        _fail(e, False)
    _serve(settings, host=host, port=port)


def _serve(
    settings: Settings, *, host: str | None, port: int | None, runtime: Runtime | None = None
) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(settings, runtime=runtime),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        log_config=logs.uvicorn_log_config(),
    )


@app.command()
def worker(
    threads: Annotated[
        int | None, typer.Option(help="Worker threads (default from settings).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's /metrics on this port (default: queue.metrics_port)."
        ),
    ] = None,
) -> None:
    """Run pipeline workers until interrupted (SIGINT/SIGTERM finish the current job first).

    On PostgreSQL any number of these, on any machines, share one queue (procrastinate).
    """
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with _runtime(False) as rt:
        size = threads or max(1, rt.settings.pipeline.workers)
        port = metrics_port if metrics_port is not None else rt.settings.queue.metrics_port
        with _worker_metrics(rt.settings.api.host, port):
            typer.echo(f"liuhen worker: {size} thread(s); Ctrl-C to stop", err=True)
            rt.queue.run_worker(concurrency=size, stop=stop)


@contextmanager
def _worker_metrics(host: str, port: int | None) -> Iterator[None]:
    """This worker's counters (stage durations, errors) over HTTP while it runs."""
    if port is None:
        yield
        return
    from prometheus_client import start_http_server

    from ingest.metrics import REGISTRY

    try:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as e:
        raise typer.BadParameter(f"cannot serve metrics on {host}:{port}: {e}") from e
    typer.echo(f"liuhen worker: metrics on http://{host}:{server.server_port}/metrics", err=True)
    try:
        yield
    finally:
        server.shutdown()
        thread.join(5)


@app.command()
def demo(
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving the API afterwards.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Seal generated sample media under a demo case, show it, then serve the API.

    Starts the embedded services, runs the pipeline on the samples, prints the case, and
    serves on 127.0.0.1 until Ctrl-C (unless --no-serve).
    """
    import tempfile

    from ingest import catalog
    from ingest.intake import seal_file
    from ingest.samples import DEMO_CASE, DEMO_DEVICE, DEMO_OFFICER, make_samples

    settings = load_settings()
    with _runtime(as_json) as rt:
        with tempfile.TemporaryDirectory() as tmp:
            typer.echo(f"liuhen demo: data under {settings.home_dir}", err=True)
            ids = []
            for path in make_samples(Path(tmp)):
                manifest = Manifest(
                    device_id=DEMO_DEVICE,
                    officer_id=DEMO_OFFICER,
                    case_ids=(DEMO_CASE,),
                    file_name=path.name,
                )
                sealed = seal_file(rt, path, manifest, actor="demo")
                ids.append(sealed.item_id)
                said = "already sealed as" if sealed.duplicate else "sealed"
                typer.echo(
                    f"{said} {path.name} → {sealed.item_id} (log index {sealed.log_index})",
                    err=True,
                )
        typer.echo("running the pipeline (probe, time, place, proxy, thumbnails) ...", err=True)
        rt.queue.wait_for(ids)
        with rt.sessions() as session:
            doc = catalog.case_document(session, DEMO_CASE)
        checkpoint = rt.ledger.publish()
        vkey = rt.ledger.key.verifier_key

        def human() -> None:
            _print_case(doc)
            typer.echo(f"log: {checkpoint.checkpoint.size} leaves; verifier key {vkey}")

        _emit({**doc, "log_size": checkpoint.checkpoint.size, "verifier_key": vkey}, as_json, human)
        if serve_after:
            typer.echo(
                f"serving http://{settings.api.host}:{settings.api.port}/docs (Ctrl-C to stop)",
                err=True,
            )
            # The same runtime (and so the same store lease) from sealing to serving.
            _serve(settings, host=None, port=None, runtime=rt)


services_app = typer.Typer(
    help="The embedded services of LIUHEN_HOME (the private SeaweedFS).", no_args_is_help=True
)
app.add_typer(services_app, name="services")


def _services_doc(settings: Settings) -> dict[str, Any]:
    from dataclasses import asdict

    from ingest.runtime import embedded_seaweed

    db = {"url": settings.database_url if settings.database.url is None else "(configured)"}
    if not settings.s3.embedded:
        store: dict[str, Any] = {
            "running": None,
            "embedded": False,
            "endpoint": settings.s3.endpoint,
            "pid": None,
        }
    else:
        store = {"embedded": True, **asdict(embedded_seaweed(settings).status())}
    return {"object_store": store, "database": db, "home": str(settings.home_dir)}


@services_app.command("status")
def services_status(as_json: JsonOpt = False) -> None:
    """Whether the home's SeaweedFS runs, where, and who uses it (starts nothing)."""
    try:
        doc = _services_doc(load_settings())
    except LiuhenError as e:
        _fail(e, as_json)

    def human() -> None:
        s = doc["object_store"]
        if not s["embedded"]:
            typer.echo(f"object store: external at {s['endpoint']} (not managed here)")
        elif s["running"]:
            typer.echo(
                f"object store: running at {s['endpoint']} (pid {s['pid']}, "
                f"{s['leases']} user(s), stops {s['idle_s']:.0f} s after the last; log {s['log']})"
            )
        else:
            typer.echo(f"object store: not running (starts on demand; log {s['log']})")

    _emit(doc, as_json, human)


@services_app.command("stop")
def services_stop(as_json: JsonOpt = False) -> None:
    """Stop the home's SeaweedFS now (the next command that needs it starts it again)."""
    from ingest.runtime import embedded_seaweed

    try:
        settings = load_settings()
        stopped = settings.s3.embedded and embedded_seaweed(settings).stop()
    except LiuhenError as e:
        _fail(e, as_json)
    doc = {"stopped": bool(stopped)}
    _emit(doc, as_json, lambda: typer.echo("stopped" if stopped else "nothing was running"))


from api import cli_export, cli_verify  # noqa: E402 - commands of their own modules

cli_verify.register(app)
cli_export.register(app)


from api import cli_log  # noqa: E402 - registers onto the groups defined above

cli_log.register(app)


from api import cli_people  # noqa: E402 - registers after the helpers it imports exist

cli_people.register(app)


from api import cli_devices  # noqa: E402 - registers after the helpers it imports exist

cli_devices.register(app)


def main() -> None:
    _setup_logging()
    try:
        app()
    except OSError as e:  # mapped at the edge: no traceback for a person at a terminal
        where = f" ({e.filename})" if e.filename else ""
        try:
            _fail(SystemRefused(f"{e.strerror or e}{where}"), "--json" in sys.argv[1:])
        except typer.Exit as done:
            sys.exit(done.exit_code)


if __name__ == "__main__":
    main()
