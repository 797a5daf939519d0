"""The one place the web imports item verification from (it is moving to a package of its
own; change this import, nothing else)."""

from __future__ import annotations

from ingest.verify import Report, verify_item

__all__ = ["Report", "verify_item"]
