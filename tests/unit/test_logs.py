"""LIUHEN_LOG_FORMAT=json: one JSON object per record, with extra fields and tracebacks."""

from __future__ import annotations

import io
import json
import logging

import pytest

from api.logs import JsonFormatter, apply_format, uvicorn_log_config


def test_a_record_is_one_json_object() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("liuhen.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("checkpoint %d 签名", 7, extra={"item_id": "ITEM1", "size": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "checkpoint 7 签名"
    assert (first["level"], first["logger"]) == ("WARNING", "liuhen.test.json")
    assert (first["item_id"], first["size"]) == ("ITEM1", 3)
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exc"]


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        monkeypatch.setenv("LIUHEN_LOG_FORMAT", "text")
        apply_format()
        assert not isinstance(handler.formatter, JsonFormatter)
        assert uvicorn_log_config() is not None
        monkeypatch.setenv("LIUHEN_LOG_FORMAT", "json")
        apply_format()
        assert isinstance(handler.formatter, JsonFormatter)
        assert uvicorn_log_config() is None  # uvicorn's loggers then go through ours
    finally:
        root.removeHandler(handler)
