"""``derive()``: whichever derivatives fit the item; a step that fails becomes a Problem and
the other steps still run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.errors import MediaError
from ingest.media.audio import make_waveform
from ingest.media.photos import photo_derivatives
from ingest.media.proxy import make_proxy
from ingest.media.stills import make_contact_sheet, make_thumbnails
from ingest.media.values import Derived, Limits, ProbeResult
from ingest.problems import Problem, ProblemCode


def _guard(stage: str, step: Callable[[], list[Derived]], problems: list[Problem]) -> list[Derived]:
    """Run one step; its failure becomes a Problem so the other steps still run."""
    try:
        return step()
    except MediaError as exc:
        problems.append(Problem.from_error(stage, exc))
    except Exception as exc:  # a tool's own error type must not lose the item
        problems.append(
            Problem(stage, ProblemCode.UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}")
        )
    return []


def derive(
    src: Path,
    info: ProbeResult,
    workdir: Path,
    *,
    limits: Limits,
    thumbs: int = 6,
    ffmpeg_exe: str | None = None,
) -> tuple[list[Derived], list[Problem]]:
    """Every derivative that fits ``info.kind``; what fails is reported, never raised."""
    problems: list[Problem] = []
    derived: list[Derived] = []

    def photo() -> list[Derived]:
        made, noted = photo_derivatives(src, workdir)
        problems.extend(noted)
        return made

    def proxy() -> list[Derived]:
        return [make_proxy(src, info, workdir, limits=limits, ffmpeg_exe=ffmpeg_exe)]

    if info.kind == "image":
        return _guard("photo", photo, problems), problems
    derived += _guard("proxy", proxy, problems)
    if info.kind == "audio":
        derived += _guard("waveform", lambda: [make_waveform(src, workdir)], problems)
        return derived, problems
    stills = _guard(
        "thumbnails", lambda: make_thumbnails(src, info, workdir, count=thumbs), problems
    )
    if 0 < len(stills) < thumbs:
        problems.append(
            Problem("thumbnails", ProblemCode.THUMBNAILS_PARTIAL, f"{len(stills)} of {thumbs} made")
        )
    if stills:
        derived += stills
        derived += _guard("contact", lambda: [make_contact_sheet(stills, workdir)], problems)
    return derived, problems
