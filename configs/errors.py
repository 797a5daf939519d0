"""Errors of the configs package."""

from __future__ import annotations

from integrity.errors import LiuhenError


class ConfigError(LiuhenError):
    """Settings are missing, malformed, or unsafe for the chosen profile."""

    code = "config_error"
