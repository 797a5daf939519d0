"""``liuhen log init-key``: make the one signer key of a deployment, explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli import JsonOpt, _emit, _fail, log_app
from configs.errors import ConfigError
from configs.settings import Settings, load_settings
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
        if output is None or origin is None:  # only then are the settings read
            settings = _settings_for_defaults()
            output = output or settings.log_key_path
            origin = origin or settings.log.origin
        path = output
        key = make_key(path, origin=origin)
    except LiuhenError as e:
        _fail(e, as_json)
    doc = {"path": str(path), "origin": key.signer.name, "verifier_key": key.verifier_key}
    _emit(doc, as_json, lambda: typer.echo(key.verifier_key))


def _settings_for_defaults() -> Settings:
    """The settings, read for the key's default path and origin. The key is made before the
    rest of a deployment is set up: when the settings are not complete yet, say which two
    options make it without them."""
    try:
        return load_settings()
    except ConfigError as e:
        raise ConfigError(
            f"{e} (or give both --output and --origin: then no other setting is read)"
        ) from e
