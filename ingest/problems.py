"""What could not be derived from an item, and why: the item keeps it, nothing is dropped."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    stage: str
    """Pipeline stage that noticed it: probe, capture_time, place, proxy, thumbnails, ..."""
    code: str
    """Stable machine-readable name, e.g. ``moov_missing``, ``clock_skew``, ``exif_unreadable``."""
    message: str
    """One sentence for a person."""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
