"""``liuhen verify``: an item, everything, or an export package (offline: no database, no
object store, only ``integrity/``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli import ActorOpt, JsonOpt, _actor, _emit, _fail
from configs.settings import load_settings
from integrity.errors import LiuhenError

if TYPE_CHECKING:
    from ingest.verify import Report

EXIT_DIFFERS = 1
EXIT_UNCHECKED = 75
"""EX_TEMPFAIL: something could not be checked (store or database unavailable), nothing differs."""


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(
    target: Annotated[
        str | None,
        typer.Argument(metavar="[ID | PACKAGE.zip]", help="One item, or an export package."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify everything.")] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="PACKAGE.zip: the log's published verifier key (C2SP note format)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Check originals, derivatives, leaves, checkpoints and custody chains; exit 0 if all hold.

    --all also holds the stored tree (the tiles receipts are proved from) against the leaves.

    Exit 1 when something differs; 75 when something could not be checked.

    75 means the store or the database was unavailable and nothing differs.

    A PACKAGE.zip is checked offline, against --key (the published log key).
    """
    if target is not None and target.lower().endswith(".zip"):
        if all_:
            typer.echo("liuhen verify: give a package or --all, not both", err=True)
            raise typer.Exit(2)
        _verify_package(Path(target), key, as_json)
        return
    if key is not None:
        typer.echo("liuhen verify: --key is for export packages", err=True)
        raise typer.Exit(2)
    if all_ == (target is not None):
        typer.echo(
            "liuhen verify: give exactly one of --all, an item ID or a PACKAGE.zip", err=True
        )
        raise typer.Exit(2)
    from ingest.verify import outage_report

    who = _actor(actor)
    try:
        report = _run(target, who)
    except Exception as e:
        outage = outage_report(e)
        if outage is None:
            if isinstance(e, LiuhenError):
                _fail(e, as_json)
            raise
        report = outage
    doc = report.as_dict()

    def human() -> None:
        for f in doc["failures"]:
            typer.echo(f"FAIL {f.get('item_id') or '-'} {f['what']}: {f['detail']}")
        for c in doc["could_not_check"]:
            where = f"{c['key']}@{c['version_id']}" if c["key"] else "-"
            typer.echo(f"COULD NOT CHECK {c['item_id'] or '-'} {where}: {c['reason']}")
        verdict = "ok" if doc["ok"] else f"{len(doc['failures'])} failure(s)"
        if doc["could_not_check"]:
            verdict += f", {len(doc['could_not_check'])} could not be checked"
        typer.echo(f"checked {doc['checked']}: {verdict}")

    _emit(doc, as_json, human)
    if report.exit_status:
        raise typer.Exit(report.exit_status)


def _run(target: str | None, who: str) -> Report:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ingest.runtime import runtime
    from ingest.verify import verify_all, verify_item

    with runtime(load_settings()) as rt:
        if target is not None:
            return verify_item(rt, target, actor=who)
        columns = (
            TextColumn("verify"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("verify", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return verify_all(rt, actor=who, progress=progress)


def _verify_package(path: Path, key: str | None, as_json: bool) -> None:
    from integrity.errors import PackageError
    from integrity.package import PackageFailure, PackageReport, verify_package

    try:
        result = verify_package(path, verifier_key=key)
    except PackageError as e:  # not a package at all: that differs too (exit 1)
        failure = PackageFailure(path.name, e.code, str(e))
        result = PackageReport(False, 0, 0, [failure], None, "given" if key else "package", None)
    except LiuhenError as e:
        _fail(e, as_json)
    doc = result.as_dict()

    def human() -> None:
        for f in result.failures:
            typer.echo(f"FAIL {f.file} {f.code}: {f.message}")
        verdict = "ok" if result.ok else f"{len(result.failures)} failure(s)"
        removed = f" and {result.removed} taken out of the case" if result.removed else ""
        typer.echo(
            f"{path}: checked {result.checked} item(s){removed}, {result.files} file(s): {verdict}"
        )

    _emit(doc, as_json, human)
    if result.warning:
        typer.echo(f"liuhen verify: {result.warning}", err=True)
    if not result.ok:
        raise typer.Exit(EXIT_DIFFERS)
