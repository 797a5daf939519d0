"""Log lines as JSON on request: ``LIUHEN_LOG_FORMAT=json`` makes every record on stderr one
JSON object (``time``, ``level``, ``logger``, ``message``, ``exc`` and any ``extra=`` fields),
for collectors that index fields; the default stays the plain text line."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

# What every LogRecord has; anything else on a record came from ``extra=`` and is kept.
# uvicorn's ``color_message`` repeats the message with terminal colour codes: not for JSON.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        return json.dumps(doc, ensure_ascii=False, default=str)


def json_logs() -> bool:
    return os.environ.get("LIUHEN_LOG_FORMAT", "text").strip().lower() == "json"


def apply_format() -> None:
    """Give the root logger's handlers the JSON formatter when ``LIUHEN_LOG_FORMAT=json``."""
    if json_logs():
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


def uvicorn_log_config() -> dict[str, Any] | None:
    """uvicorn's own logging setup, or None (its loggers then go through ours) for JSON."""
    if json_logs():
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
