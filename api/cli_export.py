"""``liuhen export CASE_ID -o FILE.zip``: a case's package that verifies offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli import ActorOpt, JsonOpt, _actor, _emit, _fail, _runtime
from integrity.errors import LiuhenError


def register(app: typer.Typer) -> None:
    app.command()(export)


def export(
    case_id: Annotated[str, typer.Argument(metavar="CASE_ID")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The package to write (.zip).")],
    as_json: JsonOpt = False,
    actor: ActorOpt = None,
) -> None:
    """Write a case's evidence package: a zipped BagIt bag that verifies offline.

    Every original, derivative, custody chain and log leaf of the case, each leaf proven
    against one signed checkpoint; check it with liuhen verify FILE.zip --key KEY.

    The export is logged as a custody event of each item, naming the package's SHA-256.
    """
    from ingest.export import export_to_file

    with _runtime(as_json) as rt:
        try:
            result = export_to_file(rt, case_id=case_id, actor=_actor(actor), output=output)
        except LiuhenError as e:
            _fail(e, as_json)
    doc = {
        "path": str(output),
        "sha256": result.sha256,
        "items": result.items,
        "checkpoint_size": result.checkpoint_size,
    }
    _emit(
        doc,
        as_json,
        lambda: typer.echo(
            f"wrote {output}: {result.items} item(s), {result.size} bytes, "
            f"SHA-256 {result.sha256}, checkpoint {result.checkpoint_size}"
        ),
    )
