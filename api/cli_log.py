"""``liuhen log init-key``: make the one signer key of a deployment, explicitly.
``liuhen log mirror-tiles``: put again the mirrored tiles ``verify --all`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli import JsonOpt, _emit, _fail, _runtime, log_app
from configs.errors import ConfigError
from configs.settings import Settings, load_settings
from integrity.errors import LiuhenError


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the command goes on the log group
    log_app.command("init-key")(init_key)
    log_app.command("mirror-tiles")(mirror_tiles)


def mirror_tiles(as_json: JsonOpt = False) -> None:
    """Put again the mirrored tiles that `liuhen verify --all` names (tile_mirror).

    Every full tile of the latest checkpoint is checked: one whose copy in the store
    (log/tile/..., what a tile-fetching reader proves with) is missing or not the leaf rows'
    hashes gets a new current version. The hashes are taken from the leaf rows again and
    put only when they give the latest checkpoint's signed root; the versions under them
    stay (Object Lock). In a bucket shared with another log this puts this log's tiles over
    that one's.
    """
    from ingest.tile_mirror import mirror_tiles as put_again

    with _runtime(as_json) as rt:
        try:
            done = put_again(rt)
        except LiuhenError as e:
            _fail(e, as_json)
    doc = {"checkpoint": done.size, "checked": done.checked, "put": done.put}

    def text() -> None:
        for key in done.put:
            typer.echo(f"put {key}")
        typer.echo(
            f"checked {done.checked} full tile(s) of checkpoint {done.size}: "
            f"{len(done.put)} put again"
        )

    _emit(doc, as_json, text)


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
