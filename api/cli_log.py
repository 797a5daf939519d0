"""``liuhen log init-key``: make the one signer key of a deployment, explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli import JsonOpt, _emit, _fail, log_app
from configs.settings import load_settings
from integrity.errors import LiuhenError


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the command goes on the log group
    log_app.command("init-key")(init_key)


def init_key(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Where to write it (default: log.key_path)."),
    ] = None,
    origin: Annotated[
        str | None, typer.Option(help="The log's origin line (default: log.origin).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the log's Ed25519 signer key (mode 0600); never overwrites one.

    The production profile refuses to start without it: give every process of the deployment
    this one file (log.key_path) or its text (LIUHEN_LOG__KEY).
    """
    from ingest.logkey import init_key as make_key

    try:
        settings = load_settings()
        path = output or settings.log_key_path
        key = make_key(path, origin=origin or settings.log.origin)
    except LiuhenError as e:
        _fail(e, as_json)
    doc = {"path": str(path), "origin": key.signer.name, "verifier_key": key.verifier_key}
    _emit(doc, as_json, lambda: typer.echo(key.verifier_key))
