"""CLI for people, search, case links and retention: ``liuhen user ...``, ``search``,
``link`` / ``unlink``, ``hold`` / ``release``, ``case-unit``, ``retention purge``.

These run on the server as local admin actions: the actor is ``cli:<os user>`` (or
``--actor``), and search sees every item.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from api.cli import ActorOpt, JsonOpt, _actor, _emit, _fail, _runtime
from configs.settings import load_settings
from integrity.errors import LiuhenError

user_app = typer.Typer(
    help="People: add users (admin, officer, reviewer, auditor), grant cases, issue tokens.",
    no_args_is_help=True,
)
retention_app = typer.Typer(
    help="Retention: delete items whose retention has ended (admin, with a reason).",
    no_args_is_help=True,
)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (required; logged).")]


def _sessions(as_json: bool) -> Any:
    """The index alone (user commands need no object store)."""
    from storage.db import make_engine, make_sessionmaker, migrate

    try:
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
    except LiuhenError as e:
        _fail(e, as_json)
    return make_sessionmaker(engine)


def _time(text: str | None, what: str, as_json: bool) -> datetime | None:
    from ingest.search import parse_time

    try:
        return parse_time(text, what)
    except LiuhenError as e:
        _fail(e, as_json)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="User name (an officer: 警号).")],
    role: Annotated[str, typer.Option(help="admin, officer, reviewer or auditor.")],
    unit: Annotated[str | None, typer.Option(help="The officer's unit.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password (web sign-in) from stdin.")
    ] = False,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Add a user and print its first API token (shown once)."""
    from ingest import people

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    sessions = _sessions(as_json)
    try:
        new = people.add_user(
            sessions, name=name, role=role, unit=unit, password=password, actor=_actor(actor)
        )
    except LiuhenError as e:
        _fail(e, as_json)
    _emit(new.document(), as_json, lambda: typer.echo(new.token))


@user_app.command("grant")
def user_grant(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    case: Annotated[str, typer.Option("--case", help="Case ID.")],
    until: Annotated[
        str | None, typer.Option(help="ISO 8601 end of the grant (default: 30 days).")
    ] = None,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Let a reviewer read a case until a time."""
    from ingest import people

    sessions = _sessions(as_json)
    try:
        doc = people.grant(
            sessions,
            name=name,
            case_id=case,
            until=_time(until, "--until", as_json),
            actor=_actor(actor),
        )
    except LiuhenError as e:
        _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"{name} may read {case} until {doc['until']}"))


@user_app.command("revoke")
def user_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    case: Annotated[str, typer.Option("--case", help="Case ID.")],
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Withdraw a reviewer's grant on a case."""
    from ingest import people

    sessions = _sessions(as_json)
    try:
        doc = people.revoke(sessions, name=name, case_id=case, actor=_actor(actor))
    except LiuhenError as e:
        _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"revoked {doc['revoked']} grant(s)"))


@user_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    revoke_others: Annotated[
        bool, typer.Option("--revoke-others", help="Revoke the user's earlier tokens.")
    ] = False,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Issue a new API token (Authorization: Bearer TOKEN)."""
    from ingest import people

    sessions = _sessions(as_json)
    try:
        token = people.issue_token(
            sessions, name=name, actor=_actor(actor), revoke_others=revoke_others
        )
    except LiuhenError as e:
        _fail(e, as_json)
    _emit({"token": token}, as_json, lambda: typer.echo(token))


@user_app.command("revoke-tokens")
def user_revoke_tokens(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Revoke every API token of a user and end their web sessions."""
    from ingest import people

    sessions = _sessions(as_json)
    try:
        count = people.revoke_tokens(sessions, name=name, actor=_actor(actor))
    except LiuhenError as e:
        _fail(e, as_json)
    _emit({"user": name, "revoked": count}, as_json, lambda: typer.echo(f"revoked {count}"))


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Disable a user at once: no sign-in, tokens revoked, web sessions ended. Their records
    stay; ``liuhen user enable`` lets them sign in again (with a new token)."""
    _set_disabled(name, True, reason, as_json, actor)


@user_app.command("enable")
def user_enable(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Let a disabled user sign in again (their old tokens stay revoked)."""
    _set_disabled(name, False, reason, as_json, actor)


def _set_disabled(name: str, disabled: bool, reason: str, as_json: bool, actor: str | None) -> None:
    from ingest import people

    sessions = _sessions(as_json)
    try:
        doc = people.set_disabled(
            sessions, name=name, disabled=disabled, reason=reason, actor=_actor(actor)
        )
    except LiuhenError as e:
        _fail(e, as_json)
    word = "disabled" if disabled else "enabled"
    _emit(doc, as_json, lambda: typer.echo(f"{name} {word}"))


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users, their roles, units, live tokens and grants, and who is disabled."""
    from ingest import people

    sessions = _sessions(as_json)
    with sessions() as session:
        users = people.list_users(session)

    def human() -> None:
        for u in users:
            grants = ", ".join(g["case_id"] for g in u["grants"] if not g["expired"])
            off = " (disabled)" if u["disabled"] else ""
            typer.echo(f"{u['user']:<20} {u['role']:<9} {u['unit'] or '-':<16} {grants}{off}")

    _emit({"users": users}, as_json, human)


def search_cmd(
    case: Annotated[str | None, typer.Option("--case", help="Case ID.")] = None,
    officer: Annotated[str | None, typer.Option(help="Officer ID.")] = None,
    device: Annotated[str | None, typer.Option(help="Device ID.")] = None,
    unit: Annotated[str | None, typer.Option(help="Unit.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="ISO 8601 start (inclusive).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="ISO 8601 end (exclusive).")] = None,
    bbox: Annotated[str | None, typer.Option(help="W,S,E,N in decimal degrees.")] = None,
    status: Annotated[str | None, typer.Option(help="ready, partial, sealed, ...")] = None,
    media_type: Annotated[str | None, typer.Option("--media-type", help="e.g. video/mp4")] = None,
    cursor: Annotated[str | None, typer.Option(help="'next' of the previous page.")] = None,
    limit: Annotated[int, typer.Option(help="Items per page (1-500).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Find items in capture-time order; prints a page and the cursor of the next one."""
    from ingest import search

    with _runtime(as_json) as rt:
        try:
            filters = search.Filters(
                case=case,
                officer=officer,
                device=device,
                unit=unit,
                start=search.parse_time(from_, "--from"),
                end=search.parse_time(to, "--to"),
                bbox=search.parse_bbox(bbox),
                status=status,
                media_type=media_type,
            )
            with rt.sessions() as session:
                doc = search.search(
                    session, principal=None, filters=filters, cursor=cursor, limit=limit
                )
        except LiuhenError as e:
            _fail(e, as_json)

    def human() -> None:
        for i in doc["items"]:
            typer.echo(
                f"{i['id']}  {i['captured_at'] or i['received_at']:<27} {i['status']:<12} "
                f"{','.join(i['case_ids']) or '-'}"
            )
        if doc["next"]:
            typer.echo(f"next: --cursor {doc['next']}")

    _emit(doc, as_json, human)


def link_cmd(
    item_id: Annotated[str, typer.Argument(metavar="ITEM_ID")],
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Link an item to a case, with a reason (a custody event)."""
    _change_link("link", item_id, case_id, reason, as_json, actor)


def unlink_cmd(
    item_id: Annotated[str, typer.Argument(metavar="ITEM_ID")],
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Unlink an item from a case, with a reason (a custody event)."""
    _change_link("unlink", item_id, case_id, reason, as_json, actor)


def _change_link(
    change: str, item_id: str, case_id: str, reason: str, as_json: bool, actor: str | None
) -> None:
    from ingest import links

    do = links.link if change == "link" else links.unlink
    with _runtime(as_json) as rt:
        try:
            doc = do(rt, item_id=item_id, case_id=case_id, reason=reason, actor=_actor(actor))
        except LiuhenError as e:
            _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"{item_id} cases: {', '.join(doc['case_ids'])}"))


def _hold(case_id: str, held: bool, reason: str, as_json: bool, actor: str | None) -> None:
    from ingest import retention

    with _runtime(as_json) as rt:
        try:
            doc = retention.set_case_hold(
                rt, case_id=case_id, held=held, reason=reason, actor=_actor(actor)
            )
        except LiuhenError as e:
            _fail(e, as_json)
    state = "held" if held else "released"
    _emit(doc, as_json, lambda: typer.echo(f"case {case_id} {state}: {len(doc['items'])} item(s)"))


def hold_cmd(
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Place a case under legal hold: S3 legal hold on every object of its items."""
    _hold(case_id, True, reason, as_json, actor)


def release_cmd(
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Release a case's legal hold (items another open case holds stay held)."""
    _hold(case_id, False, reason, as_json, actor)


def case_unit_cmd(
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    unit: Annotated[str, typer.Argument(metavar="UNIT")],
    reason: ReasonOpt,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Set the unit a case belongs to (its officers see it)."""
    from ingest import links

    with _runtime(as_json) as rt:
        try:
            doc = links.set_case_unit(
                rt, case_id=case_id, unit=unit, reason=reason, actor=_actor(actor)
            )
        except LiuhenError as e:
            _fail(e, as_json)
    _emit(doc, as_json, lambda: typer.echo(f"case {case_id}: unit {unit}"))


@retention_app.command("purge")
def retention_purge(
    reason: ReasonOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing.")] = False,
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Delete items whose retention has ended and that no case or hold keeps (each deletion
    is a custody event; the log keeps its leaves forever)."""
    from ingest import retention

    with _runtime(as_json) as rt:
        try:
            doc = retention.purge(rt, reason=reason, actor=_actor(actor), dry_run=dry_run)
        except LiuhenError as e:
            _fail(e, as_json)

    def human() -> None:
        for d in doc["deleted"]:
            typer.echo(f"{'would delete' if dry_run else 'deleted'} {d['id']}")
            for left in d.get("left") or []:
                typer.echo(f"  left on the store: {left['object']}: {left['error']}")
        for k in doc["kept"]:
            typer.echo(f"kept {k['id']}: {k['reason']}")

    _emit(doc, as_json, human)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(retention_app, name="retention")
    app.command("search")(search_cmd)
    app.command("link")(link_cmd)
    app.command("unlink")(unlink_cmd)
    app.command("hold")(hold_cmd)
    app.command("release")(release_cmd)
    app.command("case-unit")(case_unit_cmd)
