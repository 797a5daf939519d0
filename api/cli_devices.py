"""``liuhen device``, ``liuhen push`` and ``liuhen dock``: device intake on the command line."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli import ActorOpt, JsonOpt, _actor, _emit, _fail, _runtime, check_is_file
from integrity.errors import LiuhenError

device_app = typer.Typer(
    help="Enrolled devices (admin): enroll, list, disable, rotate-key, assign.",
    no_args_is_help=True,
)
dock_app = typer.Typer(
    help="Collection station: seal a docked camera's folder, receipts, optional erase.",
    no_args_is_help=True,
)

CredentialOut = Annotated[
    Path, typer.Option("-o", "--output", help="Where to write the credential file (mode 0600).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
    app.add_typer(dock_app, name="dock")
    app.command()(push)


def _enrolled_doc(enrolled: Any, output: Path) -> dict[str, Any]:
    return {
        "device_id": enrolled.device.id,
        "officer_id": enrolled.device.officer_id,
        "unit": enrolled.device.unit,
        "public_key": enrolled.device.public_key,
        "credential": str(output),
    }


@device_app.command("enroll")
def enroll(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    officer: Annotated[str, typer.Option(help="Officer ID (警号) the device is assigned to.")],
    unit: Annotated[str, typer.Option(help="Unit the device belongs to.")],
    output: CredentialOut,
    model: Annotated[str | None, typer.Option(help="Device model.")] = None,
    server: Annotated[str | None, typer.Option(help="Server URL for the credential.")] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Enroll a device and write its credential (token, signing key, log key)."""
    from ingest import devices
    from storage.db import transaction

    with _runtime(as_json) as rt:
        try:
            with transaction(rt.sessions) as session:
                enrolled = devices.enroll(
                    session,
                    device_id=device_id,
                    officer_id=officer,
                    unit=unit,
                    model=model,
                    actor=_actor(actor),
                    log_key=rt.ledger.key.verifier_key,
                    server=server,
                )
                devices.write_credential(output, enrolled.credential)
        except LiuhenError as e:
            _fail(e, as_json)
    doc = _enrolled_doc(enrolled, output)
    _emit(doc, as_json, lambda: typer.echo(f"enrolled {device_id}; credential in {output}"))


@device_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """List enrolled devices with their officer, key and assignment history."""
    from ingest import devices

    with _runtime(as_json) as rt, rt.sessions() as session:
        docs = devices.list_devices(session)

    def human() -> None:
        for d in docs:
            state = "disabled" if d["disabled"] else "active"
            typer.echo(
                f"{d['device_id']:<20} {d['officer_id'] or '-':<10} {d['unit'] or '-':<12} "
                f"{state:<8} seq {d['last_seq']}"
            )

    _emit({"devices": docs}, as_json, human)


@device_app.command("disable")
def disable(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    reason: Annotated[str | None, typer.Option(help="Why (logged).")] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Refuse every further request of a device."""
    from ingest import devices
    from storage.db import transaction

    with _runtime(as_json) as rt:
        try:
            with transaction(rt.sessions) as session:
                doc = devices.device_document(
                    session,
                    devices.disable(
                        session, device_id=device_id, actor=_actor(actor), reason=reason
                    ),
                )
        except LiuhenError as e:
            _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"disabled {device_id}"))


@device_app.command("rotate-key")
def rotate_key(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    output: CredentialOut,
    server: Annotated[str | None, typer.Option(help="Server URL for the credential.")] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Give a device a new token and signing key; the old ones stop working."""
    from ingest import devices
    from storage.db import transaction

    with _runtime(as_json) as rt:
        try:
            with transaction(rt.sessions) as session:
                enrolled = devices.rotate_key(
                    session,
                    device_id=device_id,
                    actor=_actor(actor),
                    log_key=rt.ledger.key.verifier_key,
                    server=server,
                )
                devices.write_credential(output, enrolled.credential)
        except LiuhenError as e:
            _fail(e, as_json)
    doc = _enrolled_doc(enrolled, output)
    _emit(doc, as_json, lambda: typer.echo(f"new key for {device_id}; credential in {output}"))


@device_app.command("assign")
def assign(
    device_id: Annotated[str, typer.Argument(metavar="DEVICE_ID")],
    officer: Annotated[str, typer.Option(help="Officer ID (警号) taking the device.")],
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Hand a device to another officer (the assignment history is kept)."""
    from ingest import devices
    from storage.db import transaction

    with _runtime(as_json) as rt:
        try:
            with transaction(rt.sessions) as session:
                doc = devices.device_document(
                    session,
                    devices.assign(
                        session, device_id=device_id, officer_id=officer, actor=_actor(actor)
                    ),
                )
        except LiuhenError as e:
            _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"{device_id} → {officer}"))


def push(
    files: Annotated[list[Path], typer.Argument(help="Files to upload.")],
    credential: Annotated[Path, typer.Option(help="The device's credential file.")],
    server: Annotated[
        str | None, typer.Option(help="Server URL (default: the credential's).")
    ] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Case ID (repeatable).")] = None,
    retries: Annotated[int, typer.Option(help="Retries per request, with backoff.")] = 8,
    chunk_mb: Annotated[
        int, typer.Option(min=1, max=1024, help="MiB per PATCH (smaller on flaky links).")
    ] = 16,
    as_json: JsonOpt = False,
) -> None:
    """Upload FILES over tus as an enrolled device; print receipts verified with the log key.

    Resumes an interrupted upload of the same file (state beside the credential).

    Exit 0 only when every receipt verified.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    from ingest.devices import load_credential
    from ingest.errors import InvalidInput
    from ingest.push import Pusher, PushState, Retry

    try:
        cred = load_credential(credential)
        url = server or cred.server
        if not url:
            raise InvalidInput("no server to push to: give --server, or enroll with --server")
        for path in files:
            check_is_file(path)
    except LiuhenError as e:
        _fail(e, as_json)
    state = PushState.load(credential.with_name(credential.name + ".push-state.json"))
    pusher = Pusher(
        cred, server=url, state=state, retry=Retry(attempts=retries), chunk_size=chunk_mb << 20
    )
    results: list[dict[str, Any]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:

            def progress_for(path: Path) -> Callable[[int], None]:
                task = bar.add_task(path.name, total=path.stat().st_size)
                return lambda done: bar.update(task, completed=done)

            # Each file's receipt is fetched while the next ones upload (``Pusher.push_all``).
            for doc in pusher.push_all(files, case_ids=list(case or ()), progress_for=progress_for):
                results.append(doc)
                said = "already sealed as" if doc.get("duplicate") else "sealed"
                typer.echo(f"{said} {doc['file']} → {doc['id']} (receipt verified)", err=True)
    except LiuhenError as e:
        _fail(e, as_json, partial={"items": results})
    finally:
        pusher.close()

    def human() -> None:
        for r in results:
            typer.echo(f"{r['id']}  {r['sha256']}  {r['size']:>12}  verified  {r['file']}")

    _emit({"items": results}, as_json, human)


def _summary(report: dict[str, Any], *, to_stderr: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dock import")
    for column in ("outcome", "file", "item / reason"):
        table.add_column(column)
    for s in report["sealed"]:
        table.add_row("sealed", Path(s["file"]).name, s["id"])
    for s in report["skipped"]:
        table.add_row("skipped", Path(s["file"]).name, s["reason"])
    for f in report["failed"]:
        table.add_row("[red]failed[/red]", Path(f["file"]).name, f["error"])
    Console(stderr=to_stderr).print(table)


def _dock_pass(
    rt: Any,
    folder: Path,
    *,
    receipts: Path | None,
    erase: bool,
    who: str,
    cases: tuple[str, ...],
    unit: str | None,
    stop: threading.Event,
) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ingest.dock import import_folder

    columns = (TextColumn("dock {task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, description=name, completed=done, total=total)

        report = import_folder(
            rt, folder, receipts=receipts, erase=erase, actor=who, case_ids=cases, unit=unit,
            progress=progress, stop=stop,
        )  # fmt: skip
    return report.as_dict()


DirArg = Annotated[Path, typer.Argument(help="The docked camera's folder.")]
ReceiptsOpt = Annotated[
    Path | None, typer.Option("--receipts", help="Write each verified receipt here.")
]
EraseOpt = Annotated[
    bool, typer.Option("--erase", help="Remove each camera file once its receipt verified.")
]
CaseOpt = Annotated[list[str] | None, typer.Option("--case", help="Case ID (repeatable).")]
UnitOpt = Annotated[
    str | None,
    typer.Option(
        "--unit",
        help="The station's unit, given to what it seals (default intake.dock_unit; else the "
        "unit of the device or officer in each file name).",
    ),
]


@dock_app.command("import")
def dock_import(
    folder: DirArg,
    receipts: ReceiptsOpt = None,
    erase: EraseOpt = False,
    case: CaseOpt = None,
    unit: UnitOpt = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Seal every stable media file of FOLDER once; resume what an interruption left."""
    if not folder.is_dir():
        typer.echo(f"liuhen dock: {folder} is not a folder", err=True)
        raise typer.Exit(2)
    stop = threading.Event()
    with _runtime(as_json) as rt:
        try:
            doc = _dock_pass(
                rt, folder, receipts=receipts, erase=erase, who=_actor(actor),
                cases=tuple(case or ()), unit=unit, stop=stop,
            )  # fmt: skip
        except LiuhenError as e:
            _fail(e, as_json)
    _summary(doc, to_stderr=as_json)
    _emit(doc, as_json, lambda: None)
    if doc["failed"]:
        raise typer.Exit(1)


@dock_app.command("watch")
def dock_watch(
    folder: DirArg,
    receipts: ReceiptsOpt = None,
    erase: EraseOpt = False,
    case: CaseOpt = None,
    unit: UnitOpt = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Import FOLDER again and again (every ``intake.dock_poll_s``) until interrupted."""
    if not folder.is_dir():
        typer.echo(f"liuhen dock: {folder} is not a folder", err=True)
        raise typer.Exit(2)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    total: dict[str, list[Any]] = {"sealed": [], "skipped": [], "failed": []}
    from ingest.dock import station_unit

    with _runtime(as_json) as rt:
        try:
            unit = station_unit(rt, unit)  # a mistyped unit: no later pass would fix it
        except LiuhenError as e:
            _fail(e, as_json)
        typer.echo(f"liuhen dock: watching {folder}; Ctrl-C to stop", err=True)
        while not stop.is_set():
            try:
                doc = _dock_pass(
                    rt, folder, receipts=receipts, erase=erase, who=_actor(actor),
                    cases=tuple(case or ()), unit=unit, stop=stop,
                )  # fmt: skip
            except LiuhenError as e:
                typer.echo(f"liuhen dock: {e}", err=True)
                stop.wait(rt.settings.intake.dock_poll_s)
                continue
            for s in doc["sealed"]:
                typer.echo(f"sealed {s['file']} → {s['id']}", err=True)
            total["sealed"] += doc["sealed"]
            total["failed"] = doc["failed"]  # what still fails, not every pass's repeat
            total["skipped"] = [s for s in doc["skipped"] if s["reason"] != "already imported"]
            stop.wait(rt.settings.intake.dock_poll_s)
    _summary(total, to_stderr=as_json)
    _emit(total, as_json, lambda: None)
    sys.stdout.flush()
