"""The media adapter's values: what a file is, what was made of it, and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ingest.errors import MediaError
from ingest.problems import Problem, ProblemCode

Kind = Literal["video", "audio", "image"]

GIB = 1 << 30
THUMB_MAX_PX = 320
"""Longest side of a thumbnail (video stills and photo thumbnails)."""
DISPLAY_MAX_PX = 2048
"""Longest side of a photo's display image."""
JPEG_QUALITY = 88


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What a file is, as read from its content."""

    kind: Kind
    """'video', 'audio' or 'image'."""
    media_type: str
    """MIME type from the content, e.g. video/mp4, video/quicktime, audio/amr, image/heic."""
    container: str
    """Demuxer (libav) or image format (Pillow) name that understood the file."""
    duration: float | None = None
    """Seconds, or None when the container does not say (and for images)."""
    width: int | None = None
    """Pixels as displayed, i.e. after rotation."""
    height: int | None = None
    """Pixels as displayed, i.e. after rotation."""
    rotation: int = 0
    """Clockwise degrees (0, 90, 180, 270) to turn the stored picture to display it upright."""
    video_codec: str | None = None
    video_profile: str | None = None
    audio_codec: str | None = None
    fps: float | None = None
    creation_time: str | None = None
    """The container's raw ``creation_time`` tag, unparsed."""
    location: str | None = None
    """The raw ISO 6709 location tag (``location`` / ``com.apple.quicktime.location.ISO6709``)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Container-level tags as found."""
    problems: list[Problem] = field(default_factory=list)
    """What was noticed while probing: truncation, an undecodable stream, ..."""


@dataclass(frozen=True)
class Recipe:
    """How a derivative was made, precisely enough to make it again."""

    tool: str
    version: str
    args: tuple[str, ...]
    """Tool arguments with ``{input}`` / ``{output}`` in place of paths."""
    params: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "version": self.version,
            "args": list(self.args),
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Derived:
    role: str
    """proxy, thumb-000, contact, waveform, display."""
    path: Path
    media_type: str
    ext: str
    recipe: Recipe


@dataclass(frozen=True)
class Limits:
    """Resource limits for one external tool run."""

    timeout_s: float = 600
    memory_bytes: int = 2 * GIB
    """Address-space cap (RLIMIT_AS) of the child process."""


def media_error(cls: type[MediaError], code: ProblemCode, message: str) -> MediaError:
    """An error whose instance ``code`` names the problem precisely (the class keeps its own)."""
    err = cls(message)
    err.code = code
    return err
