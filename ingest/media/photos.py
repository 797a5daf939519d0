"""A photo's derivatives: an upright display image and a thumbnail, HEIC included; a cut
JPEG is still rendered, with a problem saying so."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import PIL
from PIL import Image, ImageFile, ImageOps

from ingest.errors import MediaError
from ingest.media.tools import partial_path, register_heif, tool_versions
from ingest.media.values import (
    DISPLAY_MAX_PX,
    JPEG_QUALITY,
    THUMB_MAX_PX,
    Derived,
    Recipe,
    media_error,
)
from ingest.problems import Problem, ProblemCode

_TRUNCATED_LOCK = threading.Lock()


@contextmanager
def _tolerate_truncation() -> Iterator[None]:
    """Let Pillow decode a cut image (padding the rest) for this call only.

    Pillow offers the switch only as a module global, so it is set and restored under a lock;
    other threads decoding at the same moment would see it too, which costs them nothing worse
    than a padded picture.
    """
    with _TRUNCATED_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _render_photo(
    src: Path, workdir: Path, *, truncated: bool
) -> tuple[list[Derived], list[Problem]]:
    problems: list[Problem] = []
    with Image.open(src) as im:
        im.draft("RGB", (DISPLAY_MAX_PX, DISPLAY_MAX_PX))  # JPEG: decode at a reduced scale
        im.load()
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception as exc:  # any EXIF oddity only costs the orientation
            problems.append(
                Problem("photo", ProblemCode.ORIENTATION_UNREADABLE, f"EXIF orientation: {exc}")
            )
            upright = im
        display = upright.convert("RGB")
    display.thumbnail((DISPLAY_MAX_PX, DISPLAY_MAX_PX), Image.Resampling.LANCZOS)
    thumb = display.copy()
    thumb.thumbnail((THUMB_MAX_PX, THUMB_MAX_PX), Image.Resampling.LANCZOS)
    versions = tool_versions()
    derived = []
    for role, img, max_px in (
        ("display", display, DISPLAY_MAX_PX),
        ("thumb-000", thumb, THUMB_MAX_PX),
    ):
        final = workdir / f"{role}.jpg"
        partial = partial_path(final)
        img.save(partial, "JPEG", quality=JPEG_QUALITY)
        os.replace(partial, final)
        params: dict[str, object] = {
            "max_px": max_px,
            "exif_transpose": True,
            "load_truncated": truncated,
            "tools": versions,
        }
        recipe = Recipe("pillow", PIL.__version__, (), params)
        derived.append(Derived(role, final, "image/jpeg", "jpg", recipe))
    return derived, problems


def photo_derivatives(src: Path, workdir: Path) -> tuple[list[Derived], list[Problem]]:
    register_heif()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _render_photo(src, workdir, truncated=False)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        first_error = exc
    # A card that lost power leaves half a JPEG: still evidence, so show what is there.
    try:
        with _tolerate_truncation():
            derived, problems = _render_photo(src, workdir, truncated=True)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise media_error(
            MediaError, ProblemCode.IMAGE_UNREADABLE, f"image undecodable: {exc}"
        ) from exc
    note = Problem(
        "photo", ProblemCode.TRUNCATED, f"image decoded with missing data: {first_error}"
    )
    return derived, [note, *problems]


def make_photo_derivatives(src: Path, workdir: Path) -> list[Derived]:
    """``display`` (upright, ≤2048 px) and ``thumb-000`` (≤320 px) JPEGs; HEIC included.

    A truncated image is still rendered; its recipes then say ``load_truncated: True``.
    """
    return photo_derivatives(src, workdir)[0]
